"""A throwaway PostgreSQL server for the catalog's PostgreSQL path."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a PostgreSQL server: $KIFABRIK_TEST_POSTGRES_URL, or a fresh cluster started here."""
    if url := os.environ.get("KIFABRIK_TEST_POSTGRES_URL"):
        yield url
        return
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'kifabrik[postgres]')")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (make test installs them with apt-get when run as root)")
    # PostgreSQL refuses to run as root: run the server as the `postgres` system user then.
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="kifabrik-pg-"))
    root.chmod(0o755)
    data = root / "data"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    log = root / "server.log"
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "kifabrik", "--auth=trust",
                           "-E", "UTF8"], capture_output=True, text=True)
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[:300]}")
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                           capture_output=True, text=True)
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[:300]}")
    try:
        yield f"postgresql+psycopg://kifabrik@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
