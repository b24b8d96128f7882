"""KI-Hub pages with a full catalog: time to render each page of a project with 1,000 artifacts.

    python bench/bench_ui.py [--home /tmp/kifabrik-ui-bench] [--artifacts 1000] [--rounds 20]

Fills one project with `--artifacts` artifacts (datasets, models, adapters, evaluations,
documents, releases; each manifest lists 20 files, adapters have lineage to a model and a
dataset) and three audit entries per artifact, starts the real `kifabrik ui` server and signs in
over HTTP, then fetches every page of the project's navigation plus an artifact page and its
lineage graph `--rounds` times: p50 / p95 / max milliseconds per page against the one-second goal.
Side by side, what a user would run instead: `kifabrik artifacts list --json` on the same catalog
(a fresh process each time, as a user runs it), and the ratio. Not a test: a shared machine moves
these numbers.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

PASSWORD = "ein-langes-passwort"
PAGES = ("", "/datasets", "/models", "/jobs", "/evaluations", "/documents", "/releases", "/chat", "/keys",
         "/audit", "/members")
KINDS = (("dataset", 0.35), ("model", 0.05), ("adapter", 0.25), ("evaluation", 0.2), ("document", 0.1),
         ("release", 0.05))


def fill(home: Path, n: int) -> tuple[str, str]:
    """The project `acme` with `n` artifacts; returns (a dataset id, an adapter id)."""
    os.environ["KIFABRIK_HOME"] = str(home)
    from kifabrik import accounts
    from kifabrik.catalog import EdgeRecord
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    accounts.create_project(ws, "acme", title="ACME Maschinenbau")
    accounts.create_user(ws, "erika", PASSWORD)
    accounts.grant(ws, "erika", "acme", "admin")
    cat = ws.scoped("acme").catalog
    made: dict[str, list[str]] = {k: [] for k, _ in KINDS}
    plan = [kind for kind, share in KINDS for _ in range(round(share * n))][:n]
    for i, kind in enumerate(plan):
        artifact_id = f"{i:064x}"
        files = {f"part-{j}.bin": {"sha256": f"{j:064x}", "size": 1000 + j} for j in range(20)}
        parents = []
        if kind == "adapter" and made["model"] and made["dataset"]:
            parents = [EdgeRecord(made["model"][i % len(made["model"])], artifact_id, "base_model"),
                       EdgeRecord(made["dataset"][i % len(made["dataset"])], artifact_id, "trained_on")]
        with cat.transaction():
            cat.add_artifact(id=artifact_id, kind=kind, name=f"{kind}-{i % 97}", path=artifact_id,
                             manifest={"id": artifact_id, "files": files}, meta={"rows": {"train": i, "test": 1}, "note": "bench"},
                             parents=parents)
            for action in ("create", "verify", "use"):
                cat.audit(f"bench.{action}", subject=artifact_id, details={"i": i})
        made[kind].append(artifact_id)
    ws.close()
    return made["dataset"][0], made["adapter"][-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign_in(base: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"{base}/login").read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    body = urllib.parse.urlencode({"username": "erika", "password": PASSWORD, "csrf": token, "next": "/"}).encode()
    opener.open(f"{base}/login", data=body).read()
    return opener


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/kifabrik-ui-bench"))
    ap.add_argument("--artifacts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    t0 = time.perf_counter()
    dataset, adapter = fill(args.home, args.artifacts)
    print(f"catalog: {args.artifacts} artifacts, {3 * args.artifacts} audit entries in project acme "
          f"({time.perf_counter() - t0:.0f} s to fill)")

    port = free_port()
    exe = Path(sys.executable).with_name("kifabrik")
    env = {**os.environ, "KIFABRIK_HOME": str(args.home)}
    server = subprocess.Popen([str(exe), "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        opener = sign_in(base)
        urls = [f"/p/acme{p}" for p in PAGES] + [f"/p/acme/artifacts/{dataset}", f"/p/acme/artifacts/{adapter}/lineage"]
        print(f"\n{'page':<44} {'status':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  goal < 1000 ms")
        worst = 0.0
        for url in urls:
            times, status = [], 0
            for _ in range(args.rounds):
                t = time.perf_counter()
                try:
                    resp = opener.open(base + url)
                    resp.read()
                    status = resp.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            worst = max(worst, times[-1]) if status == 200 else worst
            print(f"{url[:44]:<44} {status:>6} {statistics.median(times):>8.1f} {p95:>8.1f} {times[-1]:>8.1f}"
                  f"  {'ok' if status == 200 and times[-1] < 1000 else ('MISSED' if status == 200 else 'not built')}")
    finally:
        server.terminate()
        server.wait(timeout=30)

    cli = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([str(exe), "--project", "acme", "artifacts", "list", "--json"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        cli.append((time.perf_counter() - t) * 1000)
    print(f"\n`kifabrik artifacts list --json` (what a terminal user runs instead): median {statistics.median(cli):.0f} ms "
          f"per call; slowest page {worst:.0f} ms = {worst / statistics.median(cli):.2f}x of it")


if __name__ == "__main__":
    main()
