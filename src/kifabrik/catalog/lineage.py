"""Walking lineage: every ancestor and descendant of an artifact, as text, JSON or DOT."""

from __future__ import annotations

import json
from dataclasses import dataclass

from kifabrik.catalog.catalog import Catalog
from kifabrik.catalog.records import ArtifactRecord, EdgeRecord


@dataclass(frozen=True)
class Lineage:
    root: ArtifactRecord
    nodes: dict[str, ArtifactRecord]
    ancestors: list[EdgeRecord]  # edges walked upwards from root
    descendants: list[EdgeRecord]  # edges walked downwards from root


def lineage(catalog: Catalog, ref: str) -> Lineage:
    """All ancestors and descendants of `ref` (breadth first; shared nodes visited once)."""
    root = catalog.get_artifact(ref)
    nodes = {root.id: root}
    up: list[EdgeRecord] = []
    down: list[EdgeRecord] = []
    for direction, out in (("up", up), ("down", down)):
        frontier, seen = [root.id], {root.id}
        while frontier:
            nxt = []
            for node in frontier:
                edges = catalog.edges(child=node) if direction == "up" else catalog.edges(parent=node)
                for e in edges:
                    out.append(e)
                    other = e.parent_id if direction == "up" else e.child_id
                    if other not in seen:
                        seen.add(other)
                        nodes[other] = catalog.get_artifact(other)
                        nxt.append(other)
            frontier = nxt
    return Lineage(root, nodes, up, down)


def _label(a: ArtifactRecord) -> str:
    flag = "" if a.status == "ok" else f" [{a.status}]"
    return f"{a.kind} {a.ref} ({a.id[:12]}){flag}"


def as_text(lin: Lineage) -> str:
    """A tree of ancestors and one of descendants, each node printed once (as `cargo tree` does).

    Lineage is a DAG: a base model reached through an adapter and through a merged model is one
    node. The first time a node appears its subtree follows; later appearances end in `(*)` and
    refer to it instead of repeating the subtree, so the text grows with the number of edges.
    """
    lines: list[str] = []
    repeated = False

    def walk(node: str, edges: list[EdgeRecord], up: bool, prefix: str, shown: set[str]) -> None:
        nonlocal repeated
        mine = [e for e in edges if (e.child_id if up else e.parent_id) == node]
        for i, e in enumerate(mine):
            other = e.parent_id if up else e.child_id
            last = i == len(mine) - 1
            has_more = any((f.child_id if up else f.parent_id) == other for f in edges)
            attrs = f" {json.dumps(e.attributes)}" if e.attributes else ""
            again = other in shown and has_more
            repeated |= again
            lines.append(f"{prefix}{'└── ' if last else '├── '}{'<-' if up else '->'} {e.relation}{attrs}: "
                         f"{_label(lin.nodes[other])}{' (*)' if again else ''}")
            if other not in shown:
                shown.add(other)
                walk(other, edges, up, prefix + ("    " if last else "│   "), shown)

    lines.append(_label(lin.root))
    for title, edges, up in (("ancestors:", lin.ancestors, True), ("descendants:", lin.descendants, False)):
        if edges:
            lines.append(title)
            walk(lin.root.id, edges, up, "", {lin.root.id})
    if not lin.ancestors and not lin.descendants:
        lines.append("(no recorded ancestors or descendants)")
    if repeated:
        lines.append("(*) shown above with its own lineage; not repeated")
    return "\n".join(lines)


def as_json(lin: Lineage) -> str:
    def node(a: ArtifactRecord) -> dict[str, object]:
        return {"id": a.id, "kind": a.kind, "name": a.name, "version": a.version, "status": a.status,
                "created_at": a.created_at.isoformat()}

    def edge(e: EdgeRecord) -> dict[str, object]:
        return {"parent": e.parent_id, "child": e.child_id, "relation": e.relation, "attributes": e.attributes}

    return json.dumps({"root": lin.root.id, "nodes": [node(a) for a in lin.nodes.values()],
                       "ancestors": [edge(e) for e in lin.ancestors],
                       "descendants": [edge(e) for e in lin.descendants]}, indent=2)


def as_dot(lin: Lineage) -> str:
    """Graphviz DOT: `kifabrik lineage ID --format dot | dot -Tsvg > lineage.svg`."""
    out = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for a in lin.nodes.values():
        style = ", style=bold" if a.id == lin.root.id else ""
        label = f"{a.kind}\\n{a.ref}\\n{a.id[:12]}".replace('"', "'")
        out.append(f'  "{a.id}" [label="{label}"{style}];')
    for e in lin.ancestors + lin.descendants:
        out.append(f'  "{e.parent_id}" -> "{e.child_id}" [label="{e.relation}"];')
    out.append("}")
    return "\n".join(out) + "\n"
