"""Fixtures for the policy tests: artifacts with policies and lineage, made without any model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kifabrik.catalog import ArtifactRecord
from kifabrik.policy import preset
from kifabrik.workspace import Workspace

EDC_DOC: dict[str, Any] = {
    "@context": {"@vocab": "https://w3id.org/edc/v0.0.1/ns/", "odrl": "http://www.w3.org/ns/odrl/2/",
                 "cx-policy": "https://w3id.org/catenax/policy/"},
    "@type": "PolicyDefinition",
    "@id": "kunden-chat-policy",
    "policy": {
        "@context": "http://www.w3.org/ns/odrl.jsonld",
        "@type": "odrl:Set",
        "odrl:permission": [{
            "odrl:action": {"@id": "odrl:use"},
            "odrl:constraint": {"@type": "LogicalConstraint", "odrl:and": [
                {"odrl:leftOperand": {"@id": "cx-policy:UsagePurpose"}, "odrl:operator": {"@id": "odrl:isAnyOf"},
                 "odrl:rightOperand": ["training", "evaluation", "serving"]},
                {"odrl:leftOperand": "odrl:count", "odrl:operator": {"@id": "odrl:lteq"},
                 "odrl:rightOperand": {"@value": "2", "@type": "xsd:integer"}},
                {"odrl:leftOperand": "odrl:spatial", "odrl:operator": "odrl:eq", "odrl:rightOperand": "EU"},
            ]},
        }],
        "odrl:prohibition": [],
        "odrl:obligation": [],
    },
}


@pytest.fixture
def edc_doc() -> dict[str, Any]:
    """A Catena-X style EDC PolicyDefinition: purpose, at most 2 uses, only in the EU."""
    import copy

    return copy.deepcopy(EDC_DOC)


@pytest.fixture
def make() -> Callable[..., ArtifactRecord]:
    """`make(ws, kind, name, parents=[ids], policy=doc|preset-name)` -> a recorded artifact."""
    counter = iter(range(10_000))

    def build(ws: Workspace, kind: str, name: str, parents: list[str] = (), policy: Any = None) -> ArtifactRecord:  # type: ignore[assignment]
        policies = []
        if policy is not None:
            doc = preset(policy) if isinstance(policy, str) else policy
            policies.append(ws.catalog.add_policy(policy if isinstance(policy, str) else "custom", doc))
        with ws.create(kind, name, parents=[(p, "trained_on" if kind == "model" else "derived_from") for p in parents],
                       policies=policies) as draft:
            draft.write_text("content.txt", f"{name} {next(counter)}")
        return draft.record

    return build
