"""Prometheus metrics of one server (own registry, so several servers can live in one process)."""

from __future__ import annotations

from typing import Any


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kifabrik_requests", "HTTP API requests by endpoint, model and status code",
                                ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("kifabrik_request_seconds", "Time from request to last byte",
                                 ["endpoint", "model"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.first_token = Histogram("kifabrik_time_to_first_token_seconds", "Time to the first streamed text",
                                     ["model"], registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.prompt_tokens = Counter("kifabrik_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter("kifabrik_completion_tokens", "Tokens generated", ["model"], registry=r)
        self.batch_size = Histogram("kifabrik_batch_join_size", "Requests added to a decoding batch at once",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.in_flight = Gauge("kifabrik_requests_in_flight", "Generation requests being answered", registry=r)
        self.queue = Gauge("kifabrik_queue_waiting", "Requests waiting in a model's queue", ["model"], registry=r)
        self.rejected = Counter("kifabrik_rejected", "Requests refused before generation", ["reason"], registry=r)
        self.cancelled = Counter("kifabrik_cancelled", "Generations stopped because the client went away",
                                 ["model"], registry=r)

    def render(self, loaded: dict[str, Any]) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        for backend in loaded.values():
            self.queue.labels(backend.base.name).set(backend.stats().get("waiting", 0))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
