"""Shared fixtures: a fresh KIFABRIK_HOME per test, a tiny random model, the CLI in-process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["KIFABRIK_QUIET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

sys.path.insert(0, str(Path(__file__).parent))

from helpers import build_tiny_model  # noqa: E402

from kifabrik.workspace import Workspace  # noqa: E402


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty KIFABRIK_HOME (environment set for the test)."""
    h = tmp_path / "kifabrik-home"
    monkeypatch.setenv("KIFABRIK_HOME", str(h))
    monkeypatch.delenv("KIFABRIK_DATABASE_URL", raising=False)
    import kifabrik.cli.common as common

    monkeypatch.setattr(common, "_ws", None)
    return h


@pytest.fixture
def ws(home: Path):
    w = Workspace.open(home)
    yield w
    w.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random Llama with a small BPE tokenizer and a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture
def tiny_model(ws: Workspace, tiny_model_dir: Path):
    from kifabrik.models.sources import add_model

    return add_model(ws, str(tiny_model_dir), name="tiny")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run the real `kifabrik` entry point in-process: `cli("models", "list")`."""
    import kifabrik.cli.common as common
    from kifabrik.cli.main import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(common, "_ws", None)
        monkeypatch.setattr(sys, "argv", ["kifabrik", *args])
        capsys.readouterr()
        code = 0
        project = os.environ.get("KIFABRIK_PROJECT")  # `--project` sets it for the command's process only
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            if common._ws is not None:
                common._ws.close()
            if project is None:
                os.environ.pop("KIFABRIK_PROJECT", None)
            else:
                os.environ["KIFABRIK_PROJECT"] = project
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    """(workspace, record, gguf path, home) with the embedded SmolLM2 registered once per session."""
    from kifabrik.errors import KifabrikError
    from kifabrik.models.sources import add_model, embedded_gguf

    try:
        gguf = embedded_gguf("smollm2-135m-instruct")
    except KifabrikError as exc:
        pytest.skip(f"embedded model not installed: {exc.hint}")
    home_dir = tmp_path_factory.mktemp("embedded-home")
    w = Workspace.open(home_dir)
    record = add_model(w, "embedded:smollm2-135m-instruct")
    yield w, record, gguf, home_dir
    w.close()
