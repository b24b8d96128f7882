"""The dataset card as Markdown, rendered from the facts in `card.json` (never the other way round)."""

from __future__ import annotations

from typing import Any

PII_NAMES = {"email": "e-mail addresses", "phone": "phone numbers", "iban": "IBANs",
             "iban_possible": "possible IBANs (country and length of an IBAN, check digits wrong)",
             "payment_card": "payment cards",
             "tax_id": "German tax IDs", "social_insurance": "German social-insurance numbers",
             "ipv4": "IPv4 addresses", "ipv6": "IPv6 addresses", "person": "person names"}
PII_MODES = {"redact": "replaced by placeholders such as [EMAIL]", "drop": "rows containing it were dropped",
             "report": "only counted; the data still contains it"}


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "unknown" if value is None else str(value)


def _split(split: dict[str, Any]) -> str:
    """How the test split was made, and what it holds out (whole documents or sections of them)."""
    text = split["method"]
    if "seed" in split:
        text += f", seed {split['seed']}, test fraction {split['test_fraction']}"
    if split.get("unit") in ("document", "section"):
        text += (f". The test split holds whole {split['unit']}s, never single chunks of one, so no table or "
                 f"section is divided between training and test: {', '.join(split['held_out'])}")
    return text


def markdown(f: dict[str, Any]) -> str:
    rows, size, pii, dd, cont = f["rows"], f["size"], f["pii"], f["dedup"], f["contamination"]
    out = [f"# Dataset card: {f['name']}", ""]
    if f.get("description"):
        out += [f["description"], ""]
    out += ["| | |", "|---|---|", f"| format | {f['format']} rows |",
            f"| rows | {_n(rows['train'])} train, {_n(rows['test'])} test"
            + (" (each a chunk of a document)" if f["format"] == "text" else "") + " |",
            f"| collected | {f['collected']} |",
            f"| usage policy | {f['policy']['name']} (`{f['policy'].get('id', '')[:12]}`) |"]
    prov = f.get("provenance")  # cards written before rows were traced have none
    inherited = [s for s in (prov or {}).get("sources", []) if s["inherited"]]
    out += [f"| inherited restrictions | from dataset {s['ref']} ({s['share']:.0%} of the rows match) |"
            for s in inherited] + [""]
    out += ["## Usage policy", ""] + [f"- {line}" for line in f["policy"]["words"]] + [
        "", "Every use (training, evaluation, serving, merging, release) is checked against this policy, "
            "also for models derived from the data.", ""]
    for s in inherited:
        out += [(f"**The restrictions of dataset {s['ref']} (`{s['id'][:12]}`) apply as well**: {s['share']:.0%} of "
                 f"the rows of this dataset are identical or near-identical to its rows ({_n(s['rows'])} rows: "
                 f"{_n(s['exact'])} exact, {_n(s['near'])} near), which covers {s['covered']:.0%} of that dataset. "
                 "This dataset is recorded as derived from it and carries every policy it carries:"), ""]
        out += [f"- {text}" for text in s["restrictions"]] + [""]
    out += ["## Sources", "", "| file | role | sha256 | bytes | valid rows | invalid rows |", "|---|---|---|---|---|---|"]
    out += [f"| {s['path']} | {s['role']} | `{s['sha256']}` | {_n(s['bytes'])} | {_n(s['rows_valid'])} | "
            f"{_n(s['rows_invalid'])} |" for s in f["sources"]]
    if prov is not None:
        out += ["", "## Rows found in other datasets", "",
                (f"The rows were compared with the rows of {_n(prov['datasets_checked'])} dataset(s) in the catalog "
                 f"({prov['method']}): {_n(prov['rows_matched'])} of {_n(prov['rows'])} rows "
                 f"({prov['share_matched']:.0%}) were found there.")]
        if prov["sources"]:
            out += ["", ("| dataset | rows of this dataset found there | exact | near | share | its rows found here "
                         "| restrictions inherited |"), "|---|---|---|---|---|---|---|"]
            out += [f"| {s['ref']} (`{s['id'][:12]}`) | {_n(s['rows'])} | {_n(s['exact'])} | {_n(s['near'])} | "
                    f"{s['share']:.0%} | {s['covered']:.0%} | {'yes' if s['inherited'] else 'no'} |" for s in prov["sources"]]
    tokens = size["tokens"]
    out += ["", "## Size", "", f"- characters: {_n(size['characters']['train'])} train, {_n(size['characters']['test'])} test"]
    if tokens.get("tokenizer"):
        out.append(f"- tokens ({tokens['tokenizer']['ref']} tokenizer): {_n(tokens['train'])} train, {_n(tokens['test'])} test")
    else:
        out.append(f"- tokens: {tokens['note']}")
    if "chunking" in size:
        ch = size["chunking"]
        out.append(f"- text chunked into pieces of at most {ch['size']} {ch['unit']} ({ch['by']})")
    langs = f["languages"]
    shares = ", ".join(f"{k} {v:.0%}" for k, v in list(langs["shares"].items())[:8]) or "none"
    out += [f"- languages: {shares} (detected on {langs['sample']} rows with {langs['detector']})", ""]
    out += ["## Processing", "", f"- rows read and valid: {_n(rows['valid_read'])}",
            f"- invalid rows skipped: {_n(rows['invalid_skipped'])}",
            f"- exact duplicates removed: {_n(dd['exact'])}; near duplicates removed: {_n(dd['near'])}"
            + (f" (Jaccard ≥ {dd['threshold']}; {dd['method']})" if dd["enabled"] else " (deduplication was off)"),
            f"- split: {_split(f['split'])}", ""]
    out += ["## Personal data", "", f"Mode: **{pii['mode']}** — {PII_MODES[pii['mode']]}.", "",
            "| kind | found |", "|---|---|"]
    out += [f"| {PII_NAMES[k]} | {_n(v)} |" for k, v in pii["counts"].items() if k != "person" or pii["name_detector"]]
    out += ["", f"Rows with personal data: {_n(pii['rows_with_pii'])}; dropped: {_n(rows['pii_dropped'])}.",
            f"Checks: {pii['checks']}.", f"Names: {pii['names']}", "",
            "No raw values of personal data are kept in this card or in the logs.", ""]
    out += ["## Contamination check", "",
            f"Word {cont['ngram']}-grams of each test row compared with the training rows: "
            f"{_n(cont['rows_with_any_overlap'])} of {_n(cont['test_rows'])} test rows share at least one n-gram; "
            f"{_n(cont['rows_flagged'])} share ≥ {cont['flag_at']:.0%} of their n-grams (max {cont['max_overlap']:.0%}).", ""]
    if cont["flagged"]:
        out += ["Flagged test rows: " + ", ".join(cont["flagged"][:20]), ""]
    if f["skipped"]:
        out += ["## Skipped rows", ""] + [f"- {s['source']}:{s['line']}: {s['reason']}" for s in f["skipped"][:200]]
        if rows["invalid_skipped"] > 200:
            out.append(f"- ... {rows['invalid_skipped'] - 200} more in card.json")
        out.append("")
    if f.get("skipped_links"):  # cards written before links were reported have no such key
        out += ["## Skipped symbolic links", "", "These links in the imported folders were not read:", ""]
        out += [f"- {s['path']} -> {s['target']}: {s['reason']}" for s in f["skipped_links"]] + [""]
    return "\n".join(out)
