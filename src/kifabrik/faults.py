"""Named crash points for fault-injection tests.

    KIFABRIK_FAULT=catalog-commit kifabrik data import ...   # SIGKILLed just before the commit

`fault_point(name)` kills the process with SIGKILL (no cleanup, no finally blocks: what a power cut
or the OOM killer does) when `KIFABRIK_FAULT` names it, and does nothing otherwise. The points sit
at the boundaries between the steps that publish a record: files in the store, catalog rows, the
commit. tests/catalog/test_crash.py kills a real process at each one and checks what is left.
"""

from __future__ import annotations

import os
import signal

#: Every point, in the order a publishing process passes them.
POINTS = ("store-published", "catalog-artifact", "catalog-policies", "catalog-commit", "catalog-committed")


def fault_point(name: str) -> None:
    if os.environ.get("KIFABRIK_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
