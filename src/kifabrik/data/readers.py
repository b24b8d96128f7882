"""Reading JSONL, JSON arrays and CSV into rows, with every bad row reported by file:line.

Lines are read as bytes with a length limit, so a 50 MB line costs at most the limit in
memory and is reported, not parsed. Each line is decoded on its own, so a file that mixes
UTF-8 and latin-1 lines names each bad line instead of failing as a whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from kifabrik.data.rows import Problem, Row, record_row
from kifabrik.errors import KifabrikError
from kifabrik.files import NestingError, parse_json

CSV_ROLES = ("system", "user", "assistant", "instruction", "input", "output", "text")
#: Column names tried, in order, when no --csv-map is given.
CSV_DEFAULTS = ({"user": "user", "assistant": "assistant"}, {"user": "question", "assistant": "answer"},
                {"user": "frage", "assistant": "antwort"}, {"user": "prompt", "assistant": "response"},
                {"instruction": "instruction", "output": "output"}, {"text": "text"})


def human_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB" if n >= 2**10 else f"{n} bytes"


def decode_hint(encoding: str) -> str:
    return (f"not valid {encoding}; the file may be latin-1/cp1252: convert it (iconv -f cp1252 -t utf-8 FILE) "
            "or pass --encoding cp1252")


#: How much of a file `binary_at` looks at; the share of bad characters from which it is binary, judged only
#: on at least `SHARE_MIN_BYTES` (random bytes give about 57 % bad ones as UTF-8; German latin-1 text 1-3 %, but
#: the 6 bytes "Größe\n" already 33 %).
SNIFF_BYTES = 8192
BINARY_SHARE = 0.3
SHARE_MIN_BYTES = 512
_TEXT_CONTROLS = frozenset("\t\n\r\f\v\x1b")


def binary_at(path: Path, encoding: str) -> int | None:
    """The byte offset at which a file shows binary content, or None for text.

    Only the first `SNIFF_BYTES` are read: a NUL byte (text in UTF-16/32 has them, so not for
    those encodings), or more than `BINARY_SHARE` of them undecodable or control characters.
    A latin-1 file read as UTF-8 stays text (a few bad bytes), so its lines are named one by one.
    """
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    wide = encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))
    if not wide and b"\x00" in head:
        return head.index(b"\x00")
    text = head.decode(encoding, errors="replace")
    bad = [i for i, ch in enumerate(text) if ch == "\ufffd" or (ch < " " and ch not in _TEXT_CONTROLS)]
    if len(head) < SHARE_MIN_BYTES or len(bad) <= BINARY_SHARE * len(text):
        return None
    return len(text[:bad[0]].encode(encoding, errors="replace"))


def binary_problem(path: Path, encoding: str) -> Problem | None:
    """One problem for a binary file given as text (JSONL, JSON, CSV, text, Markdown), instead of one per line."""
    at = binary_at(path, encoding)
    if at is None:
        return None
    return Problem(str(path), None, f"not a text file (binary content at byte {at}); give the JSONL, CSV, text or "
                                    "Markdown file itself (UTF-16 text: pass --encoding utf-16)")


def iter_lines(path: Path, encoding: str, max_line_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """`(line number, text or None, problem or None)` for every line of a file."""
    with open(path, "rb") as fh:
        lineno = 0
        while raw := fh.readline(max_line_bytes + 1):
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(1 << 20)
                    size += len(raw)
                yield lineno, None, (f"line is {human_bytes(size)}, longer than the limit of "
                                     f"{human_bytes(max_line_bytes)} (raise it with --max-line-bytes)")
                continue
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                yield lineno, None, f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is {decode_hint(encoding)}"
                continue
            yield lineno, text.lstrip("\ufeff") if lineno == 1 else text, None


def read_jsonl(path: Path, fmt: str, encoding: str, max_line_bytes: int) -> tuple[list[Row], list[Problem]]:
    """Rows and problems of a JSON Lines file (blank lines are ignored)."""
    rows, problems, src = [], [], str(path)
    for lineno, text, problem in iter_lines(path, encoding, max_line_bytes):
        if problem:
            problems.append(Problem(src, lineno, problem))
            continue
        assert text is not None
        if not text.strip():
            continue
        try:
            obj = parse_json(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            problems.append(Problem(src, lineno, f"invalid JSON at column {exc.colno}: {exc.msg}"))
            continue
        except NestingError as exc:
            problems.append(Problem(src, lineno, str(exc)))
            continue
        record, reason = record_row(obj, fmt)
        if record is None:
            problems.append(Problem(src, lineno, reason or "invalid row"))
        else:
            rows.append(Row(src, lineno, record))
    return rows, problems


def read_json_array(path: Path, fmt: str, encoding: str) -> tuple[list[Row], list[Problem]]:
    """A `.json` file holding one array of records; rows are named `item N` (from 1)."""
    src = str(path)
    try:
        data = parse_json(path.read_bytes().decode(encoding).lstrip("\ufeff"))
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        return [], [Problem(src, line, decode_hint(encoding))]
    except json.JSONDecodeError as exc:
        return [], [Problem(src, exc.lineno, f"invalid JSON at column {exc.colno}: {exc.msg}")]
    except NestingError as exc:
        return [], [Problem(src, None, str(exc))]
    if not isinstance(data, list):
        return read_single(src, data, fmt)
    rows, problems = [], []
    for i, obj in enumerate(data, 1):
        record, reason = record_row(obj, fmt)
        if record is None:
            problems.append(Problem(src, f"item {i}", reason or "invalid row"))
        else:
            rows.append(Row(src, f"item {i}", record))
    return rows, problems


def read_single(src: str, obj: object, fmt: str) -> tuple[list[Row], list[Problem]]:
    record, reason = record_row(obj, fmt)
    return ([Row(src, 1, record)], []) if record else ([], [Problem(src, 1, reason or "invalid record")])


def parse_csv_map(spec: str | dict[str, str] | None) -> dict[str, str] | None:
    """`user=Frage,assistant=Antwort` -> {"user": "Frage", "assistant": "Antwort"}."""
    if spec is None or isinstance(spec, dict):
        mapping = spec
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, column = part.partition("=")
            if not sep or not column.strip():
                raise KifabrikError(f"--csv-map {spec!r}: {part!r} is not ROLE=COLUMN",
                                    hint="e.g. --csv-map user=Frage,assistant=Antwort or --csv-map text=Inhalt")
            mapping[key.strip()] = column.strip()
    if mapping is None:
        return None
    unknown = sorted(set(mapping) - set(CSV_ROLES))
    if unknown:
        raise KifabrikError(f"--csv-map: unknown role {unknown[0]!r}", hint=f"roles: {', '.join(CSV_ROLES)}")
    if not ({"user", "assistant"} <= set(mapping) or {"instruction", "output"} <= set(mapping) or "text" in mapping):
        raise KifabrikError("--csv-map must map user and assistant, instruction and output, or text",
                            hint="e.g. --csv-map user=Frage,assistant=Antwort")
    return mapping


def read_csv(path: Path, mapping: dict[str, str] | None, encoding: str,
             max_line_bytes: int) -> tuple[list[Row], list[Problem]]:
    """Rows of a CSV/TSV file (delimiter sniffed among , ; tab |); line numbers are physical lines."""
    src, bad_lines, lines = str(path), {}, []
    for lineno, text, problem in iter_lines(path, encoding, max_line_bytes):
        if problem:
            bad_lines[lineno] = problem
        lines.append(text if text is not None else "\n")
    try:
        dialect = csv.Sniffer().sniff("".join(lines[:50]), delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # type: ignore[assignment]
    reader = csv.reader(io.StringIO("".join(lines)), dialect)
    header = next(reader, None)
    if not header:
        return [], [Problem(src, 1, "no header row")]
    header = [h.strip() for h in header]
    mapping = mapping or next((m for m in CSV_DEFAULTS if all(c.lower() in (h.lower() for h in header)
                                                              for c in m.values())), None)
    if mapping is None:
        raise KifabrikError(f"{src}: which columns hold the data? columns are: {', '.join(header)}",
                            hint="pass --csv-map user=COLUMN,assistant=COLUMN (or text=COLUMN)")
    lower = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in mapping.values() if c.lower() not in lower]
    if missing:
        raise KifabrikError(f"{src}:1: column {missing[0]!r} named in --csv-map is not in the header "
                            f"(columns: {', '.join(header)})", hint="fix --csv-map or the CSV header")
    index = {role: lower[col.lower()] for role, col in mapping.items()}
    rows, problems, start = [], [], reader.line_num + 1
    for cells in reader:
        end = reader.line_num
        line, start = start, end + 1
        bad = next((bad_lines[n] for n in range(line, end + 1) if n in bad_lines), None)
        if bad:
            problems.append(Problem(src, line, bad))
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append(Problem(src, line, f"{len(cells)} cells, but the header has {len(header)}"))
            continue
        empty = [role for role, i in index.items() if role not in ("system", "input") and not cells[i].strip()]
        if empty:
            problems.append(Problem(src, line, f"column {mapping[empty[0]]!r} ({empty[0]}) is empty"))
            continue
        obj = {role: cells[i] for role, i in index.items()}
        fmt = "text" if "text" in obj else "instruction" if "instruction" in obj else "chat"
        if fmt == "chat":
            msgs = [{"role": r, "content": obj[r]} for r in ("system", "user", "assistant") if r in obj]
            msgs = [m for m in msgs if m["role"] != "system" or m["content"].strip()]
            obj = {"messages": msgs}
        record, reason = record_row(obj, fmt)
        if record is None:
            problems.append(Problem(src, line, reason or "invalid row"))
        else:
            rows.append(Row(src, line, record))
    return rows, problems
