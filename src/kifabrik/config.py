"""Settings and recipes: one pydantic configuration system for files, CLI and HTTP.

Precedence for recipes: defaults < recipe file < `--set a.b=value`. Errors from a
recipe file name the file and the line of the offending key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kifabrik.errors import KifabrikError
from kifabrik.executor_options import ExecutorSpec
from kifabrik.files import MAX_DEPTH, MAX_FILE_BYTES, NestingError, read_input


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Where kifabrik keeps its state.

    Attributes:
        home: `$KIFABRIK_HOME` (default `~/.kifabrik`): catalog, artifact store, caches.
        database_url: `$KIFABRIK_DATABASE_URL`; default SQLite in `home`.
        region: `$KIFABRIK_REGION`, the deployment region usage policies check (e.g. `EU`).
    """

    home: Path
    database_url: str
    region: str = "EU"

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> Settings:
        """Read the settings from the environment (an explicit `home` wins)."""
        root = Path(home or os.environ.get("KIFABRIK_HOME") or Path.home() / ".kifabrik").expanduser()
        url = os.environ.get("KIFABRIK_DATABASE_URL") or f"sqlite:///{root.resolve() / 'catalog.db'}"
        return cls(home=root.resolve(), database_url=url, region=os.environ.get("KIFABRIK_REGION", "EU"))

    @property
    def store_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def ensure_writable(self) -> None:
        """Create `home` or fail with one clear message if it cannot be written."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise KifabrikError(
                f"KIFABRIK_HOME {self.home} is not writable ({exc.strerror or exc})",
                hint="set KIFABRIK_HOME to a directory you can write, e.g. KIFABRIK_HOME=$PWD/.kifabrik",
            ) from None


def set_offline(online: bool = False) -> None:
    """Make the process offline (the default) or allow hub access.

    Must run before `huggingface_hub` is imported: it reads these variables once.
    Telemetry is switched off either way.
    """
    os.environ["HF_HUB_OFFLINE"] = "0" if online else "1"
    os.environ["HF_DATASETS_OFFLINE"] = "0" if online else "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # kifabrik shows its own (rich) progress
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ["DO_NOT_TRACK"] = "1"


def resolve_path(spec: str) -> Path:
    """A user path, or `kifabrik:REL` for a file shipped inside the kifabrik package (demo data, tasks)."""
    if spec.startswith("kifabrik:"):
        from importlib import resources

        return Path(str(resources.files("kifabrik") / spec.removeprefix("kifabrik:")))
    return Path(spec).expanduser()


# --------------------------------------------------------------------------- recipes
class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelSpec(StrictModel):
    """The base model a recipe builds on."""

    source: str = Field(
        description="Where the model comes from: `embedded:NAME`, a local Hugging Face folder, "
        "a `.gguf` file, a registered model name/id, or a hub id (needs --online)."
    )
    name: str | None = Field(default=None, description="Name to register it under (default: derived from the source).")
    trust_remote_code: bool = Field(default=False, description="Allow the model's own Python code to run. Off unless asked.")
    accept_terms: bool = Field(default=False, description="Accept the licence terms an embedded model requires to be "
                               "accepted before use (embedded:gemma3-270m: the Gemma Terms of Use).")


class Organisation(StrictModel):
    """Facts about the provider that the platform cannot know (used by the document stage)."""

    provider: str | None = Field(default=None, description="Legal name of the provider.")
    contact: str | None = Field(default=None, description="Contact address for the model.")
    intended_purpose: str | None = Field(default=None, description="What the model is meant to be used for.")
    acceptable_use: str | None = Field(default=None, description="Acceptable-use policy in words or as a URL.")


class Recipe(StrictModel):
    """A whole pipeline: base model, datasets and the stages to run in order.

    `stages` holds raw mappings here; `kifabrik.pipeline.validate_recipe` checks each one
    against the options model of its registered stage, so every stage's options are
    validated before any heavy work starts.
    """

    name: str = Field(description="Name of the recipe; prefixes the names of what it produces.")
    description: str | None = Field(default=None, description="Free text shown in `kifabrik runs`.")
    model: ModelSpec = Field(description="The base model.")
    organisation: Organisation = Field(default_factory=Organisation, description="Provider facts for documents.")
    datasets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Datasets by name (data stage).")
    stages: list[dict[str, Any]] = Field(default_factory=list, description="Stages in the order they run; each has a `stage` key.")
    executor: ExecutorSpec | None = Field(default=None, description="Where the stages run (local or Slurm) and the "
                                          "Slurm options of every job; a stage's own `executor:` overrides them.")


# --------------------------------------------------------------------------- YAML with lines
class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item.

    It also counts how deep nodes nest while composing (PyYAML recurses once per level) and
    stops at `MAX_DEPTH`, long before Python's recursion limit.
    """

    depth = 0
    deep_line: int | None = None

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            event = self.peek_event()
            if self.depth > MAX_DEPTH and isinstance(event, yaml.CollectionStartEvent):  # scalars add no level
                self.deep_line = event.start_mark.line + 1
                raise NestingError(MAX_DEPTH)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_graph(root: yaml.Node) -> None:
    """Refuse what aliases hide from `compose_node`'s count: a chain of aliases that nests deeper
    than `MAX_DEPTH`, a cycle (`&a [*a]`), or a document that would, expanded, have more nodes
    than `MAX_FILE_BYTES` (a file without aliases never does: every node takes a byte)."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (depth, expanded node count)
    open_ids: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in done:
            continue
        kids = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if id(node) in open_ids:
                raise NestingError(message="an alias refers to its own anchor (endless nesting)")
            open_ids.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in done)
            continue
        open_ids.discard(id(node))
        depth = 1 + max((done[id(k)][0] for k in kids if isinstance(k, yaml.CollectionNode)), default=0)
        count = 1 + sum(done[id(k)][1] for k in kids)
        if depth > MAX_DEPTH:
            raise NestingError(MAX_DEPTH)
        if count > MAX_FILE_BYTES:
            raise NestingError(message=f"its aliases expand to more than {MAX_FILE_BYTES:,} nodes "
                                       "(the size limit for YAML input, kifabrik.files.MAX_FILE_BYTES)")
        done[id(node)] = (depth if isinstance(node, yaml.CollectionNode) else 0, count)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    return _LineDict(mapping, lines, node.start_mark.line + 1)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list[Any]:
    items = yaml.SafeLoader.construct_sequence(loader, node, deep=True)
    return _LineList(items, [n.start_mark.line + 1 for n in node.value], node.start_mark.line + 1)


class _LineDict(dict):
    def __init__(self, data: dict[str, Any], lines: dict[str, int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


class _LineList(list):
    def __init__(self, data: list[Any], lines: list[int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file, keeping line numbers; syntax errors name file:line.

    Every YAML file a user gives (recipes, train configs, tasks, gates, organisation files)
    comes through here, under the input limits of `kifabrik.files` (size and nesting depth).
    """
    try:
        text = read_input(path)
    except FileNotFoundError:
        raise KifabrikError(f"{path}: no such file", hint="check the path") from None
    except UnicodeDecodeError as exc:
        raise KifabrikError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", hint="save the file as UTF-8") from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    except NestingError as exc:
        where = f"{path}:{loader.deep_line}" if loader.deep_line else str(path)
        raise KifabrikError(f"{where}: {exc}", hint="flatten the YAML; nothing was read from it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise KifabrikError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}", hint="fix the YAML syntax") from None
    finally:
        loader.dispose()


def line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    """The file line of the value at `loc` (a pydantic error location), if known."""
    line = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, _LineDict) and isinstance(part, str):
            line = node.lines.get(part, line)
            node = node.get(part)
        elif isinstance(node, _LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line


def format_loc(loc: tuple[int | str, ...]) -> str:
    """`("stages", 0, "max_new_tokens")` -> `stages[0].max_new_tokens`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_messages(exc: ValidationError, data: Any, source: str, prefix: tuple[int | str, ...] = ()) -> list[str]:
    """One line per pydantic error: `file:line: field: message`."""
    messages = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = line_of(data, loc)
        where = f"{source}:{line}" if line else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        messages.append(f"{where}: {format_loc(loc) or '(top level)'}: {msg}")
    return messages


# --------------------------------------------------------------------------- overrides
def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set a.b=value` overrides to a raw recipe mapping (in place).

    Values are parsed as YAML scalars (`--set stages.0.max_new_tokens=16`). A list
    element can be named by index or, for stages, by the stage's `name`.
    """
    for item in overrides:
        if "=" not in item:
            raise KifabrikError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set stages.answer.max_new_tokens=32")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise KifabrikError(f"--set {item!r}: empty key", hint="e.g. --set model.source=embedded:smollm2-135m-instruct")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = _list_index(node, part, key)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if part not in node or node[part] is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise KifabrikError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping or list", hint="check the key path")
    return data


def _list_index(node: list[Any], part: str, key: str) -> int:
    if part.lstrip("-").isdigit():
        idx = int(part)
        if -len(node) <= idx < len(node):
            return idx
        raise KifabrikError(f"--set {key}: index {idx} out of range (the list has {len(node)} items)")
    for idx, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return idx
    raise KifabrikError(f"--set {key}: no list item named {part!r}", hint="use an index or the `name` of a stage")
