"""The ML-BOM: CycloneDX 1.6 JSON with the model, its base model, adapters and datasets as
components (hashes, licences), lineage as dependencies and a modelCard section; validated
against the official CycloneDX 1.6 JSON schema that `cyclonedx-python-lib` ships (offline)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.document.facts import file_name
from kifabrik.errors import KifabrikError

NAMESPACE = uuid.UUID("7d0f2b8e-5a4c-4c55-9a57-6b1f0c4e2a11")  # kifabrik's namespace for BOM serial numbers


def ref(record: ArtifactRecord) -> str:
    return f"kifabrik:{record.kind}:{record.id}"


def licence(name: str | None) -> list[dict[str, Any]]:
    """A CycloneDX licence choice: an SPDX id where the name is one, else the name as written."""
    if not name or name.startswith("unknown"):
        return []
    try:
        from cyclonedx.spdx import fixup_id

        spdx = fixup_id(name)
    except ImportError:
        spdx = None
    return [{"license": {"id": spdx} if spdx else {"name": name}}]


def _props(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": f"kifabrik:{k}", "value": str(v)} for k, v in pairs.items() if v is not None]


def component(record: ArtifactRecord, ws_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One catalog record as a CycloneDX component."""
    meta = ws_meta if ws_meta is not None else record.meta
    ctype = "data" if record.kind == "dataset" else "machine-learning-model"
    comp: dict[str, Any] = {"type": ctype, "bom-ref": ref(record), "name": record.name, "version": str(record.version)}
    hashes = []
    if meta.get("weights_sha256"):
        hashes.append({"alg": "SHA-256", "content": meta["weights_sha256"]})
    if hashes:
        comp["hashes"] = hashes
    lic = licence(meta.get("license"))
    if lic:
        comp["licenses"] = lic
    props = {"artifact_id": record.id, "kind": record.kind, "created_at": record.created_at.isoformat(),
             "architecture": meta.get("architecture"), "parameters": meta.get("parameters"),
             "method": meta.get("method"), "source": meta.get("source"),
             "hub_id": meta.get("hub_id") or meta.get("upstream")}
    if record.kind == "dataset":
        props.update({"format": meta.get("format"), "rows_train": (meta.get("rows") or {}).get("train"),
                      "rows_test": (meta.get("rows") or {}).get("test"), "policy": meta.get("policy")})
        comp["data"] = [{"type": "dataset", "name": record.name,
                         "contents": {"properties": _props({"format": meta.get("format")})} if meta.get("format")
                         else {}}]
        if not comp["data"][0]["contents"]:
            del comp["data"][0]["contents"]
        files = meta.get("sources") or []
        sums = [{"alg": "SHA-256", "content": s["sha256"]} for s in files if s.get("sha256")]
        if sums:
            comp["hashes"] = sums  # the imported source files (also listed by file name below, no machine paths)
            props.update({f"source_file_{i}": file_name(s.get("path")) for i, s in enumerate(files)})
    comp["properties"] = _props(props)
    return comp


def _items(stats: dict[str, Any] | None) -> str:
    """`n = 64` (the item count the metric was measured on), or why it is missing."""
    return f"n = {stats['n'].value}" if stats and stats["n"].recorded else "item count not recorded"


def _spread(stats: dict[str, Any] | None) -> dict[str, Any]:
    """The recorded 95 % interval as CycloneDX's confidenceInterval (absent when none is recorded)."""
    if not stats or not stats["ci"].recorded or "–" not in str(stats["ci"].value):
        return {}
    low, high = str(stats["ci"].value).split("–", 1)
    return {"confidenceInterval": {"lowerBound": low.strip(), "upperBound": high.strip()}}


def model_card(target: ArtifactRecord, datasets: list[ArtifactRecord], evaluations: list[dict[str, Any]],
               trainings: list[ArtifactRecord], org: dict[str, Any]) -> dict[str, Any]:
    """The CycloneDX modelCard section from recorded facts only."""
    params: dict[str, Any] = {"task": "text-generation", "approach": {"type": "supervised"}
                              if target.meta.get("objective", "sft") == "sft" else {"type": "self-supervised"},
                              "inputs": [{"format": "text"}], "outputs": [{"format": "text"}]}
    if target.meta.get("model_type"):
        params["architectureFamily"] = target.meta["model_type"]
    if target.meta.get("architecture"):
        params["modelArchitecture"] = target.meta["architecture"]
    if datasets:
        params["datasets"] = [{"ref": ref(d)} for d in datasets]
    card: dict[str, Any] = {"modelParameters": params}
    metrics = []
    for ev in evaluations:
        for key, value in (ev["results"].get("metrics") or ev.get("raw_metrics") or {}).items():
            if isinstance(value, int | float):
                metrics.append({"type": key, "value": f"{value:.6g}", **_spread(ev["stats"].get(key)),
                                "slice": f"{ev['record'].value} ({_items(ev['stats'].get(key))})"})
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations: dict[str, Any] = {}
    if org.get("intended_purpose"):
        considerations["useCases"] = [org["intended_purpose"]]
    energy = [{"activity": "fine-tuning" if t.meta.get("method") == "lora" else "training",
               "energyProviders": [{"organization": {"name": "not recorded"}, "energySource": "unknown",
                                    "energyProvided": {"value": t.meta["accounting"]["energy_kwh"], "unit": "kWh"}}],
               "activityEnergyCost": {"value": t.meta["accounting"]["energy_kwh"], "unit": "kWh"},
               "properties": _props({"training_record": t.id, "energy_method": t.meta["accounting"].get("energy_method"),
                                     "flops": t.meta["accounting"].get("flops")})}
              for t in trainings if isinstance(t.meta.get("accounting", {}).get("energy_kwh"), int | float)]
    if energy:
        considerations["environmentalConsiderations"] = {"energyConsumptions": energy}
    if considerations:
        card["considerations"] = considerations
    return card


def build_bom(target: ArtifactRecord, records: list[ArtifactRecord], edges: list[tuple[ArtifactRecord, str, ArtifactRecord]],
              evaluations: list[dict[str, Any]], trainings: list[ArtifactRecord], org: dict[str, Any],
              generated_at: str, version: str) -> dict[str, Any]:
    """The ML-BOM of `target`: every ancestor in `records`, lineage `edges` as dependencies."""
    datasets = [r for r in records if r.kind == "dataset"]
    main = component(target)
    main["modelCard"] = model_card(target, datasets, evaluations, trainings, org)
    metadata: dict[str, Any] = {"timestamp": generated_at,
                                "tools": {"components": [{"type": "application", "name": "kifabrik", "version": version}]},
                                "component": main}
    if org.get("provider"):
        metadata["supplier"] = {"name": org["provider"]}
        if org.get("contact"):
            metadata["supplier"]["contact"] = [{"email": org["contact"]} if "@" in org["contact"]
                                               else {"name": org["contact"]}]
    depends: dict[str, list[str]] = {ref(r): [] for r in [target, *records]}
    for parent, _, child in edges:
        if ref(child) in depends and ref(parent) in depends and ref(parent) not in depends[ref(child)]:
            depends[ref(child)].append(ref(parent))
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX", "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(NAMESPACE, target.id + generated_at)}", "version": 1,
        "metadata": metadata,
        "components": [component(r) for r in records if r.id != target.id],
        "dependencies": [{"ref": k, "dependsOn": sorted(v)} for k, v in depends.items()],
    }


def validate(bom: dict[str, Any]) -> str:
    """Validate against the CycloneDX 1.6 JSON schema; returns what was checked, raises on a violation."""
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        return "not validated: cyclonedx-python-lib (with its json-validation extra) is not installed"
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    if error is not None:
        data = getattr(error, "data", None)
        where = "/".join(str(p) for p in getattr(data, "absolute_path", [])) or "(top level)"
        raise KifabrikError(f"the ML-BOM does not validate against CycloneDX 1.6 at {where}: "
                            f"{getattr(data, 'message', str(error))[:300]}",
                            hint="this is a bug in kifabrik's BOM writer; please report it")
    from importlib.metadata import version

    return f"valid CycloneDX 1.6 (JSON schema of cyclonedx-python-lib {version('cyclonedx-python-lib')})"
