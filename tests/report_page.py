"""Reading a rendered report back as a reader sees it: the HTML tables (with their "best" marks)
and the Markdown tables; shared by the report's unit and end-to-end tests."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class Page(HTMLParser):
    """Tables (by their data-table key: header, rows, and the cells marked "best"), the text,
    and every start tag with its attributes."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.headers: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.best: dict[str, set[tuple[int, int]]] = {}  # (row, column) of cells with class "best"
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._table = self._row = self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = attrs.get("data-table")
            self.headers[self._table], self.tables[self._table], self.best[self._table] = [], [], set()
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            if "best" in (attrs.get("class") or "").split():
                self.best[self._table].add((len(self.tables[self._table]), len(self._row)))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self.headers[self._table]:
                self.tables[self._table].append(self._row)
            else:
                self.headers[self._table] = self._row
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def column(self, table: str, header: str) -> list[str]:
        i = self.headers[table].index(header)
        return [row[i] for row in self.tables[table]]


def _markdown_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    tables, current = [], None
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            cells = [" ".join(c.replace(r"\|", "|").strip().strip("*").split()) for c in line.strip("|").split(" | ")]
            if current is None:
                current = (cells, [])
            elif not set(line) <= set("|:- "):
                current[1].append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def make_run(path: Path, records: list[dict]) -> Path:
    """A run directory holding ``records`` (appended as bench run appends them)."""
    from bench.record import RunDir

    run = RunDir(path).create()
    for rec in records:
        run.append(rec)
    return path
