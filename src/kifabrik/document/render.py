"""Rendering the documents: Jinja2 templates (data files in `templates/`) to Markdown, HTML and PDF.

Templates print facts with `f(fact)`: a recorded fact becomes its value and a numbered
citation `[n]` of the record it was read from (listed by `sources()` at the end); a fact that
is not recorded becomes *not recorded — reason*. HTML is the Markdown rendered by
markdown-it (raw HTML in values is escaped); PDF is that HTML printed by WeasyPrint (extra `pdf`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from kifabrik.document.facts import Fact, Source
from kifabrik.errors import KifabrikError

TEMPLATES = Path(__file__).parent / "templates"


def fmt(value: Any, unit: str | None = None) -> str:
    """A value for a Markdown document (numbers with separators; `|` escaped for tables)."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:.4e}" if value and (abs(value) >= 1e7 or abs(value) < 1e-6) else f"{value:.6g}"
    elif isinstance(value, list | tuple):
        text = ", ".join(fmt(v) for v in value) or "none"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "none"
    else:
        text = str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return f"{text} {unit}" if unit else text


class Citations:
    """Numbers the records a document cites, in order of first use."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[str, str, str | None], int] = {}
        self.sources: list[Source] = []

    def cite(self, source: Source | None) -> str:
        if source is None:
            return ""
        if source.key not in self.numbers:
            self.numbers[source.key] = len(self.sources) + 1
            self.sources.append(source)
        return f" [{self.numbers[source.key]}]"

    def lines(self) -> list[str]:
        out = []
        for n, s in enumerate(self.sources, 1):
            where = {"artifact": "artifact id", "run": "run id", "policy": "policy id", "catalogue": "file"}.get(s.kind)
            out.append(f"[{n}] {s.label}" + (f" — {where} `{s.id}`" if where and s.id else ""))
        return out


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    return env


def render_markdown(template: str, context: dict[str, Any]) -> str:
    """Render one Markdown template with fresh citations."""
    cites = Citations()

    def f(item: Any, unit: str | None = None) -> str:
        if not isinstance(item, Fact):
            return fmt(item, unit) if item is not None else "*not recorded*"
        if not item.recorded:
            return f"*not recorded — {fmt(item.reason)}*"
        return fmt(item.value, unit) + cites.cite(item.source)

    def sources() -> str:
        return "\n".join(f"- {line}" for line in cites.lines()) or "- (no records cited)"

    text = environment().get_template(template).render(**context, f=f, sources=sources)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip() + "\n"


def split_front_matter(markdown: str) -> tuple[str | None, str]:
    """(YAML front matter or None, body) of a Markdown document."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---\n", 4)
        if end > 0:
            return markdown[4:end + 1], markdown[end + 5:]
    return None, markdown


def to_html(markdown: str, title: str) -> str:
    """A self-contained HTML page of a Markdown document (no scripts, no external files)."""
    from markdown_it import MarkdownIt

    front, body = split_front_matter(markdown)
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)
    page = environment().get_template("page.html.j2")
    return page.render(title=title, front_matter=front, body=html)


def to_pdf(html: str, out: Path) -> None:
    """Print an HTML page to PDF with WeasyPrint (the optional extra `pdf`)."""
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: WeasyPrint installed but its Pango libraries are missing
        raise KifabrikError(f"PDF output needs WeasyPrint, which is not available ({type(exc).__name__}: {exc})",
                            hint="pip install 'kifabrik[pdf]' (WeasyPrint also needs the Pango system library), "
                                 "or use --format md|html") from None
    HTML(string=html).write_pdf(str(out))
