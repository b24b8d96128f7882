"""What grounding adds to a served answer: latency of a Fach-LLM vs its model alone (not a test).

    .venv/bin/python bench/bench_grounding.py [--requests 40] [--max-tokens 48]

1. In a temporary workspace, runs the demo's data and knowledge-base steps and puts the embedded
   base model and that knowledge base together as a Fach-LLM (`base-kb`; no training needed: the
   question is what retrieval and the longer prompt cost, not what the answer is worth).
2. Starts `kifabrik serve` on 127.0.0.1 with both names, and sends the facts task's questions
   one at a time with the official `openai` client, alternately to the plain model and to the
   Fach-LLM (greedy, same max_tokens, streaming, so time to first token is seen too).
3. Prints p50/p95 of total latency and time to first token, prompt tokens per request, and what
   grounding adds (difference and ratio); and retrieval alone, in this process, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import pct


def recipe() -> dict:
    demo = yaml.safe_load((resources.files("kifabrik") / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    kb_step = next(s for s in demo["stages"] if s["stage"] == "kb")
    stages = [s for s in demo["stages"] if s["stage"] == "data"] + [kb_step, {
        "stage": "fach-llm", "name": "base-kb", "model": "base", "kb": kb_step.get("name", "kb"),
        "release_name": "base-kb"}]
    return {**demo, "name": "bench-grounding", "stages": stages}


def questions(n: int) -> list[str]:
    path = resources.files("kifabrik") / "recipes" / "tasks" / "schmidt-fakten.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["question"] for r in rows][:n]


def one(client, model: str, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(total latency, time to first token, prompt tokens) of one streamed request."""
    t0 = time.perf_counter()
    ttft, usage = None, None
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - t0
    return total, ttft if ttft is not None else total, usage.prompt_tokens if usage else 0


def summary(results: list[tuple[float, float, int]]) -> dict[str, float]:
    total, first, prompt = ([r[i] for r in results] for i in range(3))
    return {"n": len(results), "p50": pct(total, 0.5), "p95": pct(total, 0.95), "ttft50": pct(first, 0.5),
            "ttft95": pct(first, 0.95), "prompt": sum(prompt) / len(prompt)}


def retrieval_only(home: str, prompts: list[str]) -> tuple[float, float]:
    from kifabrik.kb.grounding import Grounding
    from kifabrik.models.runtime import resolve
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    grounding = Grounding.of(ws, resolve(ws, ws.catalog.get_artifact("base-kb", "fach-llm")), purpose="serving")
    lat = []
    for p in prompts:
        t0 = time.perf_counter()
        grounding.ground([{"role": "user", "content": p}])
        lat.append(time.perf_counter() - t0)
    ws.close()
    return pct(lat, 0.5) * 1000, pct(lat, 0.95) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40, help="facts-task questions sent to each name")
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    from openai import OpenAI

    from kifabrik.pipeline import run_recipe, validate_recipe
    from kifabrik.workspace import Workspace

    prompts = questions(args.requests)
    with tempfile.TemporaryDirectory() as home:
        os.environ["KIFABRIK_HOME"] = home
        os.environ["HF_HUB_OFFLINE"] = "1"
        ws = Workspace.open(home)
        run_recipe(ws, validate_recipe(recipe(), "bench-grounding"))
        base = ws.catalog.get_artifact("smollm2-135m-instruct", "model").name
        ws.close()
        r50, r95 = retrieval_only(home, prompts)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        kifabrik = str(Path(sys.executable).parent / "kifabrik")
        server = subprocess.Popen([kifabrik, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth",
                                   "--preload", "--models", f"{base},base-kb", "--no-ai-notice",
                                   "--reason", "benchmark of grounding latency"], stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            import urllib.request

            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
            one(client, base, prompts[0], 4)
            one(client, "base-kb", prompts[0], 4)  # warm-up both paths
            plain_runs, grounded_runs = [], []
            for p in prompts:  # interleaved, so a busy machine slows both sides alike
                plain_runs.append(one(client, base, p, args.max_tokens))
                grounded_runs.append(one(client, "base-kb", p, args.max_tokens))
            plain, grounded = summary(plain_runs), summary(grounded_runs)
        finally:
            server.terminate()
            server.wait(120)
    print(f"\n{len(prompts)} facts-task questions, one at a time, greedy, max_tokens {args.max_tokens}, "
          f"streaming; {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':22} {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'prompt tok':>11}")
    for name, r in (("model alone", plain), ("Fach-LLM (grounded)", grounded)):
        print(f"{name:22} {r['p50']:>7.2f} {r['p95']:>7.2f} {r['ttft50']:>9.3f} {r['ttft95']:>9.3f} {r['prompt']:>11.0f}")
    print(f"grounding adds: p50 {grounded['p50'] - plain['p50']:+.2f} s ({grounded['p50'] / plain['p50']:.2f}x), "
          f"p95 {grounded['p95'] - plain['p95']:+.2f} s ({grounded['p95'] / plain['p95']:.2f}x), "
          f"TTFT p50 {grounded['ttft50'] - plain['ttft50']:+.3f} s ({grounded['ttft50'] / plain['ttft50']:.2f}x)")
    print(f"retrieval alone (in process, policy checks included): p50 {r50:.1f} ms, p95 {r95:.1f} ms")


if __name__ == "__main__":
    main()
