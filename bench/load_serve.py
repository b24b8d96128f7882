"""Load test of a real `kifabrik serve` on 127.0.0.1 with a hostile mix (not a test; prints counts).

    .venv/bin/python bench/load_serve.py [--home DIR] [--clients 32] [--per-client 8] [--kinds valid,...]

1. Registers the embedded model (SmolLM2-135M-Instruct) in a fresh `--home` and creates two keys:
   one without a limit, one limited to 5 requests per minute.
2. Starts `kifabrik serve` as a subprocess (keys on, default body limit of 1 MiB, --preload).
3. 32 threads with the official `openai` client send, round robin: a valid chat request
   (max_tokens 16), an oversized one (4 MiB of content; four of them 31.5 MB, the size of the
   report that found the missing limit), one with `"seed": 2**80`, and one on the rate-limited key.
Prints the status counts, the audit entries the run wrote (by action and decision), the
refusals counted in /metrics, and the server's resident memory after start and at its peak
(VmHWM from /proc, read before the server stops). `--kinds valid` gives the baseline: the
same server under valid requests only.

Measured on the 2-core development machine (shared), 256 requests from 32 clients, 136 s:
valid 64 x 200; oversized 64 x 413; bad seed 64 x 400; over the rate limit 10 x 200, 54 x 429.
Audit: 74 `serve.request` entries (one per served request, none for the 182 refusals, which
/metrics counts), chain intact. Server RSS 481 MiB after start, peak 1179 MiB; valid requests
alone (`--kinds valid --per-client 2`, 64 x 200) peak at 1197 MiB: the refused bodies add nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODEL = "smollm2-135m-instruct"
KINDS = ("valid", "oversized", "bad_seed", "over_rate")


def rss_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def one(url: str, keys: dict[str, str], kind: str, i: int, timeout: float) -> tuple[str, int]:
    import openai

    client = openai.OpenAI(base_url=url, api_key=keys["limited" if kind == "over_rate" else "open"], max_retries=0,
                           timeout=timeout)
    msg = f"Explain in one sentence why request {i} matters."
    kw: dict = {"max_tokens": 16, "temperature": 0}
    if kind == "oversized":
        size = 31_500_000 if i % 64 == 1 else 4 * 2**20
        msg = "Ölwechsel " * (size // 11)
    elif kind == "bad_seed":
        kw = {**kw, "temperature": 0.7, "seed": 2**80}
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": msg}], **kw)
        return kind, 200
    except openai.APIStatusError as exc:
        return kind, exc.status_code
    except openai.APIConnectionError:
        return kind, -1  # no HTTP answer at all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "kifabrik-load-serve")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=8, help="requests per client thread")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request at most")
    ap.add_argument("--kinds", default=",".join(KINDS), help="request kinds, sent round robin")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(KINDS):
        ap.error(f"--kinds: unknown {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
    shutil.rmtree(args.home, ignore_errors=True)  # a fresh catalog: every audit entry counted is this run's
    env = {**os.environ, "KIFABRIK_HOME": str(args.home), "HF_HUB_OFFLINE": "1"}
    kifabrik = str(Path(sys.executable).parent / "kifabrik")

    def cli(*a: str) -> str:
        return subprocess.run([kifabrik, *a], check=True, capture_output=True, text=True, env=env).stdout.strip()

    cli("models", "add", f"embedded:{MODEL}")
    keys = {"open": cli("keys", "create", "--models", MODEL),
            "limited": cli("keys", "create", "--models", MODEL, "--rate-limit", "5/min")}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([kifabrik, "serve", "--host", "127.0.0.1", "--port", str(port), "--preload",
                               "--models", MODEL, "--max-batch", "16", "--max-queue", "64"],
                              env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        rss_start = rss_mib(server.pid, "VmRSS")
        jobs = [(kinds[i % len(kinds)], i) for i in range(args.clients * args.per_client)]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda job: one(base + "/v1", keys, *job, args.timeout), jobs))
        wall = time.perf_counter() - start
        req = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {keys['open']}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            metrics = [line for line in r.read().decode().splitlines() if line.startswith("kifabrik_rejected_total")]
        rss_now, rss_peak = rss_mib(server.pid, "VmRSS"), rss_mib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(120)

    from kifabrik.workspace import Workspace

    ws = Workspace.open(args.home)
    entries = ws.catalog.audit_entries()
    chain = ws.catalog.verify_audit()
    ws.close()
    by_kind = Counter(results)
    print(f"\n{len(jobs)} requests from {args.clients} clients in {wall:.1f} s, {os.cpu_count()} CPU cores")
    for kind in kinds:
        print(f"  {kind:10} " + ", ".join(f"{status}: {n}" for (k, status), n in sorted(by_kind.items()) if k == kind))
    print("statuses:", json.dumps(dict(sorted(Counter(s for _, s in results).items()))))
    print(f"audit entries: {len(entries)} in all;",
          json.dumps(dict(Counter(f"{e.action}/{e.decision}" for e in entries))), f"chain problems: {len(chain)}")
    print("refusals in /metrics:", "; ".join(metrics))
    print(f"server RSS: {rss_start:.0f} MiB after start, {rss_now:.0f} MiB after the run, peak {rss_peak:.0f} MiB")


if __name__ == "__main__":
    main()
