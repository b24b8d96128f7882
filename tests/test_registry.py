"""The registry finds every component through the package's entry points, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kifabrik import registry
from kifabrik.errors import KifabrikError

KINDS = ("stage", "suite", "serve-backend")


@pytest.mark.parametrize("kind", KINDS)
def test_every_declared_name_registers_itself(kind: str) -> None:
    declared = registry.declared(kind)
    assert declared, f"no entry points for {kind}"
    for name in declared:
        if kind == "serve-backend" and name == "vllm":
            continue  # its module imports vllm only when a server starts; the name must still resolve
        assert registry.lookup(kind, name) is not None


def test_vllm_backend_is_declared_and_resolves() -> None:
    assert "vllm" in registry.names("serve-backend")
    assert registry.lookup("serve-backend", "vllm").kind == "vllm"


def test_agent_tool_group_is_loaded_by_its_group_name() -> None:
    from kifabrik.agents.tools import resolve

    tools = resolve(["schmidt.*"])
    assert tools and all(t.name.startswith("schmidt.") for t in tools)
    assert "schmidt" not in registry.registered("agent-tool")


def test_unknown_name_lists_declared_names() -> None:
    with pytest.raises(KifabrikError) as err:
        registry.lookup("stage", "no-such-stage")
    assert "train" in err.value.hint and "evaluate" in err.value.hint


def test_names_import_nothing() -> None:
    code = ("import sys; from kifabrik import registry; print(registry.names('stage'));"
            "assert not [m for m in sys.modules if m.startswith('kifabrik.train')], 'train imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'train'" in out.stdout
