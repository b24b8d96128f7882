"""Benchmark of the data stage: import + PII scan + dedup throughput and peak memory.

    python bench/bench_data.py              # 100,000 generated chat rows
    python bench/bench_data.py --rows 20000

Prints rows/s for each step run on its own, for the whole `import_dataset` (validation,
PII redaction, exact + MinHash dedup, split, contamination check, card, artifact), the
peak resident memory of each measurement (each runs in a fresh process), and the same
figures for the plain-Python script a user would otherwise write (json.loads, e-mail /
IBAN regexes without checksums, exact dedup with a set) — which finds less and checks less.
Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = ["Wie oft wechsle ich das Öl an der {m}?", "Die {m} zeigt Fehler E{c}. Was tun?",
             "Ich brauche {q} Stück Artikel SM-{c}-10 für die {m}.", "Wo ist Bestellung A-2026-{c}{q}?",
             "Wann kommt ein Techniker zur {m} nach {city}?"]
ANSWERS = ["Das Öl der {m} wechseln Sie alle {h} Betriebsstunden.", "Fehler E{c}: Bitte prüfen Sie den Ölstand.",
           "Artikel SM-{c}-10 ist in {q} Werktagen lieferbar.", "Bestellung A-2026-{c}{q} geht morgen in den Versand.",
           "Ein Techniker kommt am Montag nach {city}."]
PII = [" Mail: kunde{n}@example.com.", " Tel. +49 711 555 {n:04d}.", " Konto DE89 3704 0044 0532 0130 00.",
       " Server 192.0.2.{k}."]
CITIES = ["Ulm", "Stuttgart", "Augsburg", "Freiburg"]


def generate(path: Path, n: int, seed: int = 0) -> None:
    """n chat rows; about 10 % carry PII, 5 % repeat an earlier row exactly."""
    rng = random.Random(seed)
    rows: list[str] = []
    for i in range(n):
        if rows and rng.random() < 0.05:
            rows.append(rng.choice(rows))
            continue
        t = rng.randrange(len(QUESTIONS))
        slots = {"m": f"FZ {rng.randrange(100, 999)}", "c": rng.randrange(100, 999), "q": rng.randrange(1, 20),
                 "h": rng.randrange(500, 4000), "city": rng.choice(CITIES)}
        user = QUESTIONS[t].format(**slots) + f" (Kunde {i})"
        if rng.random() < 0.1:
            user += rng.choice(PII).format(n=i % 10000, k=i % 250 + 1)
        rows.append(json.dumps({"messages": [{"role": "user", "content": user},
                                             {"role": "assistant", "content": ANSWERS[t].format(**slots)}]},
                               ensure_ascii=False) + "\n")
    path.write_text("".join(rows), encoding="utf-8")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(step: str, path: Path) -> dict[str, float]:
    """Run one step in this (fresh) process; returns seconds, rows and peak RSS."""
    from kifabrik.data.readers import read_jsonl

    t0 = time.perf_counter()
    if step == "baseline":
        email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
        iban = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){4,7}\b")
        seen, kept = set(), []
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            text = "\n".join(m["content"] for m in row["messages"])
            text = iban.sub("[IBAN]", email.sub("[EMAIL]", text))
            if text not in seen:
                seen.add(text)
                kept.append(row)
        rows = len(kept)
    elif step == "read":
        rows = len(read_jsonl(path, "auto", "utf-8", 8 * 2**20)[0])
    elif step == "pii":
        from kifabrik.data.pii import Scanner
        from kifabrik.data.rows import row_text

        texts = [row_text(r.record) for r in read_jsonl(path, "auto", "utf-8", 8 * 2**20)[0]]
        t0 = time.perf_counter()
        scanner = Scanner()
        for text in texts:
            scanner.redact(text)
        rows = len(texts)
    elif step == "dedup":
        from kifabrik.data.dedup import dedup

        read = read_jsonl(path, "auto", "utf-8", 8 * 2**20)[0]
        t0 = time.perf_counter()
        rows = len(dedup(read)[0])
        rows = len(read)
    else:  # the whole import into a scratch KIFABRIK_HOME
        from kifabrik.data import ImportOptions, import_dataset
        from kifabrik.workspace import Workspace

        ws = Workspace.open(tempfile.mkdtemp(prefix="kf-bench-"))
        res = import_dataset(ws, ImportOptions(name="bench", path=str(path), policy_preset="internal-only"))
        rows = res.card["rows"]["valid_read"]
        ws.close()
    return {"seconds": time.perf_counter() - t0, "rows": rows, "peak_mb": peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:  # child process: one measurement, printed as JSON
        print(json.dumps(measure(args.step, args.file)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        generate(path, args.rows)
        size = path.stat().st_size / 2**20
        print(f"{args.rows:,} generated chat rows ({size:.1f} MB JSONL), {os.cpu_count()} CPU cores")
        env = {**os.environ, "KIFABRIK_QUIET": "1"}
        results = {}
        for step in ("baseline", "read", "pii", "dedup", "import"):
            out = subprocess.run([sys.executable, __file__, "--step", step, "--file", str(path)], env=env,
                                 capture_output=True, text=True, check=True)
            results[step] = json.loads(out.stdout.strip().splitlines()[-1])
        labels = {"baseline": "plain-Python script (json + 2 regexes + set)", "read": "kifabrik read + validate",
                  "pii": "kifabrik PII scan (9 kinds, checksums)", "dedup": "kifabrik exact + MinHash dedup",
                  "import": "kifabrik import_dataset (all steps + card)"}
        print(f"{'step':48} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}")
        for step, r in results.items():
            print(f"{labels[step]:48} {r['seconds']:8.1f} {args.rows / r['seconds']:10,.0f} {r['peak_mb']:12.0f}")
        ratio = results["import"]["seconds"] / results["baseline"]["seconds"]
        print(f"full import takes {ratio:.1f}x the time of the plain script, which validates nothing, checks no "
              "checksums, finds no phone/tax/SV/card/IP data, no near duplicates, writes no card or policy")


if __name__ == "__main__":
    main()
