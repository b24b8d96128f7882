"""Dataset facts (dataset records, their card.json, their usage policies) and the facts of the
AI Office template for the public summary of training content that follow from them."""

from __future__ import annotations

from typing import Any, Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.document.collect import read_json
from kifabrik.document.facts import (
    Fact,
    Source,
    artifact_source,
    fact,
    file_name,
    get,
    not_recorded,
)
from kifabrik.policy import parse_policy, policy_words, restrictions
from kifabrik.policy.odrl import PolicyError
from kifabrik.workspace import Workspace

#: The template's data-source sections, by the category people give a dataset (`--data-source NAME=CATEGORY`).
#: `private` is the provider's own non-public data (a company's chats, handbooks): not obtained from third
#: parties, so section 2.6; `licensed` and `third-party` are private data obtained from others (2.2).
Category = Literal["public", "licensed", "third-party", "private", "crawled", "user", "synthetic", "other"]
SECTIONS: dict[str, str] = {
    "public": "2.1", "licensed": "2.2", "third-party": "2.2", "private": "2.6", "crawled": "2.3", "user": "2.4",
    "synthetic": "2.5", "other": "2.6",
}
CATEGORY_WORDS: dict[str, str] = {
    "public": "publicly available dataset", "licensed": "private dataset licensed from a third party",
    "third-party": "private dataset obtained from a third party", "private": "the provider's own non-public data",
    "crawled": "crawled or scraped from online sources", "user": "data of users of the provider's services",
    "synthetic": "synthetic data", "other": "other source",
}
#: Size bands of the template for text (tokens).
BANDS = [(1_000_000_000, "less than 1 billion tokens"), (10 * 10**12, "1 billion to 10 trillion tokens")]
UNCLASSIFIED = ("nobody classified this dataset into a source category of the template: give "
                "`data_sources: {NAME: public|licensed|third-party|private|crawled|user|synthetic|other}` in the "
                "document or release step or --data-source NAME=CATEGORY")
IMPORT_DATE = "import date"


def policy_facts(ws: Workspace, record: ArtifactRecord) -> list[dict[str, Any]]:
    """The usage policies attached to a dataset, in words, each pointing at its policy record."""
    out = []
    for policy_id, name, doc in ws.catalog.policies_of(record.id):
        src = Source("policy", f"policy {name}", policy_id)
        try:
            words = policy_words(parse_policy(doc, f"policy {name}"))
        except PolicyError as exc:
            words = [f"(not valid ODRL any more: {exc.problems[0]})"]
        out.append({"name": Fact(name, src.at("name")), "id": Fact(policy_id, src.at("id")),
                    "words": Fact(words, src.at("document"))})
    return out


def dataset_facts(ws: Workspace, record: ArtifactRecord, categories: dict[str, str]) -> dict[str, Any]:
    src = artifact_source(record)
    card = read_json(ws.path(record) / "card.json") or {}
    no_card = "the dataset's card.json does not record it"

    def c(path: str, missing: str = no_card) -> Fact:
        return fact(get(card, path), src, f"card.json:{path}", missing=missing)

    tokens_note = get(card, "size.tokens.note") or "no base-model tokenizer counted the tokens at import"
    langs = get(card, "languages.shares") or record.meta.get("languages")
    cat = categories.get(record.name)
    pii_counts = {k: v for k, v in (get(card, "pii.counts") or {}).items() if v}
    return {
        "name": Fact(record.name, src.at("name")), "ref": Fact(record.ref, src.at("name@version")),
        "id": Fact(record.id, src.at("id")), "source": src,
        "created_at": Fact(record.created_at.isoformat(timespec="seconds"), src.at("created_at")),
        "description": c("description", "no description was given at import"),
        "format": fact(record.meta.get("format"), src, "meta.format", missing="no format recorded"),
        "rows_train": fact(get(record.meta, "rows.train"), src, "meta.rows.train", missing="no row count"),
        "rows_test": fact(get(record.meta, "rows.test"), src, "meta.rows.test", missing="no row count"),
        "characters_train": c("size.characters.train"),
        "tokens_train": c("size.tokens.train", tokens_note),
        "tokens_test": c("size.tokens.test", tokens_note),
        "languages": fact(langs, src, "card.json:languages.shares", missing="no language detection is recorded"),
        "collected": c("collected"),
        # a file is named by its name and content hash: no path of the machine that imported it
        "files": fact([{"path": file_name(s.get("path")), "sha256": s.get("sha256"), "bytes": s.get("bytes"),
                        "role": s.get("role")} for s in card.get("sources") or record.meta.get("sources") or []],
                      src, "card.json:sources", missing="no source files are recorded"),
        "pii_mode": c("pii.mode"),
        "pii_found": (not_recorded(no_card) if not card.get("pii")
                      else Fact(pii_counts or "none found", src.at("card.json:pii.counts"))),
        "pii_checks": c("pii.checks"),
        # what the scan could not see belongs beside what it found
        "pii_names": c("pii.names", "the card does not say whether person names were detected"),
        "dedup_exact": c("dedup.exact"), "dedup_near": c("dedup.near"),
        "invalid_skipped": c("rows.invalid_skipped"),
        "contamination_flagged": c("contamination.rows_flagged"),
        "contamination_test_rows": c("contamination.test_rows"),
        "policies": policy_facts(ws, record),
        "category": fact(f"{cat} ({CATEGORY_WORDS[cat]})" if cat else None, Source("options", "document options"),
                         f"data_sources.{record.name}", missing=UNCLASSIFIED),
        "section": SECTIONS.get(cat or "", None),
    }


def restriction_facts(ws: Workspace, target: ArtifactRecord) -> list[dict[str, Any]]:
    """Prohibitions and duties the target inherits, each pointing at the policy that carries it."""
    out = []
    for r in restrictions(ws, target.id):
        src = Source("policy", f"policy {r['policy']}", r["policy_id"])
        out.append({"kind": r["kind"], "text": Fact(r["text"], src.at(r.get("rule") or "rule")),
                    "from": ", ".join(f"{s['kind']} {s['ref']}" for s in r["sources"])})
    return out


def training_tokens(datasets: list[dict[str, Any]], trainings: list[dict[str, Any]]) -> None:
    """A dataset imported without a tokenizer has no token count of its own; the training that used it counted
    the tokens of its training sequences (section 2(b)): say that, with the datasets it counted together."""
    for d in datasets:
        if d["tokens_train"].recorded:
            continue
        used = [t for t in trainings if d["ref"].value in t["datasets"] and t["train_tokens"].recorded]
        if used:
            t = used[-1]
            others = [r for r in t["datasets"] if r != d["ref"].value]
            d["tokens_train"] = Fact(f"{t['train_tokens'].value:,} in the training sequences of {t['record'].value}"
                                     + (f" together with {', '.join(others)}" if others else "")
                                     + " (not counted per dataset at import)", t["train_tokens"].source)


def size_band(tokens: int) -> str:
    for limit, band in BANDS:
        if tokens < limit:
            return band
    return "more than 10 trillion tokens"


def content_summary(datasets: list[dict[str, Any]], trainings: list[dict[str, Any]]) -> dict[str, Any]:
    """Section 1.3 facts: size band, languages and latest collection date over the training datasets."""
    derived = Source("derived", "training datasets of this model (section 2)")
    tokens = [d["tokens_train"].value for d in datasets]
    if datasets and all(isinstance(t, int) for t in tokens):
        total: Fact = Fact(sum(tokens), derived.at("sum of tokens_train"))
    else:
        seen = [t["train_tokens"].value for t in trainings if t["train_tokens"].recorded]
        total = (Fact(sum(seen), Source("derived", "training records of this model").at("sum of data.train.tokens"))
                 if seen else not_recorded("neither the dataset cards nor the training records count tokens"))
    band = Fact(size_band(total.value), total.source) if total.recorded else not_recorded(total.reason or "")
    langs: dict[str, float] = {}
    for d in datasets:
        for lang, share in (d["languages"].value or {}).items():
            langs[lang] = max(langs.get(lang, 0.0), share)
    languages = (Fact(sorted(langs, key=lambda k: -langs[k]), derived.at("languages.shares"))
                 if langs else not_recorded("no language detection is recorded for the training datasets"))
    # a card without a stated collection date records the import date and says so: keep the qualifier
    dates = [(str(d["collected"].value)[:10], IMPORT_DATE in str(d["collected"].value), d["name"].value)
             for d in datasets if d["collected"].recorded]
    if dates:
        day, imported, name = max(dates)
        latest = Fact(f"{day} (import date of {name}; its collection date was not given)" if imported else day,
                      derived.at("collected"))
    else:
        latest = not_recorded("the dataset cards record no collection date")
    by_section: dict[str, list[dict[str, Any]]] = {s: [] for s in ("2.1", "2.2", "2.3", "2.4", "2.5", "2.6")}
    for d in datasets:
        if d["section"]:
            by_section[d["section"]].append(d)
    return {"tokens": total, "band": band, "languages": languages, "latest_collection": latest,
            "by_section": by_section, "unclassified": [d for d in datasets if not d["section"]]}
