"""What makes adapters mergeable: same base weights, same architecture, LoRA without DoRA."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.runtime import base_of
from kifabrik.workspace import Workspace


@dataclass(frozen=True)
class AdapterInfo:
    record: ArtifactRecord
    path: Path
    config: dict[str, Any]
    base: ArtifactRecord

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0))

    @property
    def target_modules(self) -> list[str]:
        tm = self.config.get("target_modules") or []
        return sorted(tm) if isinstance(tm, list) else [str(tm)]


def load_info(ws: Workspace, ref: str) -> AdapterInfo:
    record = ws.catalog.get_artifact(ref)
    if record.kind != "adapter":
        raise KifabrikError(f"{record.ref} is a {record.kind}, not an adapter",
                            hint="list adapters with `kifabrik adapters list`")
    path = ws.path(record)
    cfg_path = path / "adapter_config.json"
    if not cfg_path.exists() or not (path / "adapter_model.safetensors").exists():
        raise KifabrikError(f"adapter {record.ref}: adapter_config.json or adapter_model.safetensors missing in {path}",
                            hint=f"check it with `kifabrik verify {record.id[:12]}`")
    return AdapterInfo(record, path, json.loads(cfg_path.read_text(encoding="utf-8")), base_of(ws, record))


def check_compatible(adapters: list[AdapterInfo]) -> None:
    """Refuse, with the reason, adapters that cannot be merged (any ranks can: outputs are re-ranked)."""
    first = adapters[0]
    for a in adapters:
        if a.config.get("peft_type") != "LORA":
            raise KifabrikError(f"adapter {a.record.ref} is a {a.config.get('peft_type')} adapter; only LoRA merges")
        if a.config.get("use_dora"):
            raise KifabrikError(f"adapter {a.record.ref} uses DoRA, whose magnitude vectors cannot be combined "
                                "by these methods", hint="merge DoRA adapters into their base one at a time")
        if a.config.get("modules_to_save"):
            raise KifabrikError(f"adapter {a.record.ref} fully trains modules {a.config['modules_to_save']}; "
                                "those cannot be merged by weight deltas")
    for a in adapters[1:]:
        same_weights = (a.base.meta.get("weights_sha256") and
                        a.base.meta.get("weights_sha256") == first.base.meta.get("weights_sha256"))
        if a.base.id != first.base.id and not same_weights:
            raise KifabrikError(
                f"adapters {first.record.ref} and {a.record.ref} were trained on different base models "
                f"({first.base.ref}, weights {str(first.base.meta.get('weights_sha256'))[:12]} vs {a.base.ref}, "
                f"weights {str(a.base.meta.get('weights_sha256'))[:12]})",
                hint="only adapters of the same base weights can be merged")
        if a.base.meta.get("architecture") != first.base.meta.get("architecture"):
            raise KifabrikError(f"adapters {first.record.ref} and {a.record.ref} target different architectures")
