"""Issue 17, "one formatting layer": no report table holds a number a view or a notebook turned into a string.

pipeline/tables.py formats every DataFrame a report shows (thousands separators, about 3 significant digits,
$ and %, "n/a" for NaN, units in the headers). A cell that reaches it as a string escapes that: "1.5206 req/s",
"x1.32", "8192", "0.3593", "1.00 / 1.01", "NaN". `cell_problems` finds such cells in rendered HTML; the end-to-end
test scans every table of every report of the session's hostile pipeline run (tests/test_security.py `hostile`,
built once for all workers: no extra pipeline run).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline import tables
from tests.test_security import hostile  # noqa: F401  (the session's shared run: a fixture)

NA_WORDS = {"nan", "NaN", "None", "NaT", "<NA>", "inf", "-inf", "null"}
PLAIN = re.compile(r"-?\d[\d,]*(\.\d+)?")
UNIT = re.compile(
    r"(USD ?-?[\d,]*\.?\d+)|(x-?\d[\d,]*(\.\d+)?)|(-?[\d,]*\.?\d+ ?(req/s|ms|s|GiB|GB|GB/s|TB/s|tokens|tok/s|x|"
    r"instances|GPUs|concurrent requests))"
)
PAIR = re.compile(r"-?[\d,]*\.?\d+ ?/ ?-?[\d,]*\.?\d+")
INDEX_CLASSES = ("row_heading", "index_name", "blank")


class Tables(HTMLParser):
    """Every <td> text of a page, with its table's number and the table's header texts; and the index cells:
    a <th> in a <tbody> or with pandas' index classes (the layer hides the index)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[tuple[int, str, str]] = []  # (table number, header text, cell text)
        self.index_cells: list[str] = []
        self.heads: list[list[str]] = []
        self._table = -1
        self._text: list[str] | None = None
        self._tag = ""
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._body = True
        elif tag == "table":
            self._table = len(self.heads)
            self.heads.append([])
        elif tag in ("td", "th") and self._table >= 0:
            self._text, self._tag = [], tag
            cls = dict(attrs).get("class") or ""
            if tag == "th" and (self._body or any(c in cls.split() for c in INDEX_CLASSES)):
                self.index_cells.append(cls or "a row header in the table body")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._body = False
        if tag in ("td", "th") and self._text is not None:
            text = "".join(self._text).strip()
            if self._tag == "th":
                self.heads[self._table].append(text)
            else:
                self.cells.append((self._table, " | ".join(self.heads[self._table]), text))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def problem(text: str) -> str | None:
    """Why one cell's text is not what the table layer would show for a number, or None when it could be."""
    t = text.strip()
    if t in NA_WORDS:
        return "NaN/None shown raw (the layer shows n/a)"
    if PLAIN.fullmatch(t):
        if "." in t:
            significant = re.sub(r"^0+", "", t.lstrip("-").replace(",", "").replace(".", ""))
            if len(significant) > 3:
                return "a float with more than 3 significant digits (the layer rounds to about 3)"
        elif "," not in t and len(t.lstrip("-")) >= 4:
            return "a whole number of 4+ digits without thousands separators"
        return None
    if UNIT.fullmatch(t):
        return "a number with its unit in the cell (the unit belongs in the header)"
    if PAIR.fullmatch(t):
        return "two numbers in one cell (one column each)"
    return None


def cell_problems(html: str, skip_header: tuple[str, ...] = ()) -> list[str]:
    """Cells of every table on the page that the table layer did not format, and any index column shown; tables
    whose header row holds one of `skip_header` are left out."""
    page = Tables()
    page.feed(html)
    page.close()
    out = [
        f"table {n} [{head[:80]}]: {text!r}: {why}"
        for n, head, text in page.cells
        if not any(h in head for h in skip_header) and (why := problem(text))
    ]
    out += [f"an index cell (<th class={c!r}>): the layer hides the index" for c in page.index_cells]
    return out


@pytest.mark.parametrize(
    "text",
    ["NaN", "None", "1.5206 req/s", "x1.32", "1.01x", "USD 6.88", "2,000 ms", "8192", "0.3593", "264.9", "1.00 / 1.01"],
)
def test_a_pre_formatted_cell_is_caught(text):
    assert problem(text), text


def test_what_the_table_layer_writes_passes_and_a_string_of_the_same_number_does_not():
    numbers = pd.DataFrame(
        {
            "rate_rps": [1.5206, 264.9, None],
            "monthly_usd": [91065.31, 6.88, 0.0],
            "utilization": [0.1167, 1.0, 0.18],
            "tokens": [8192, 11392, 12],
            "b2": [0.3593, 8.123e-06, 1.726],
        }
    )
    assert cell_problems(tables.html(numbers)) == []
    strings = numbers.assign(rate_rps=[f"{v} req/s" for v in numbers["rate_rps"]], tokens=numbers["tokens"].astype(str))
    found = cell_problems(tables.html(strings))
    assert any("'1.5206 req/s'" in p for p in found) and any("'8192'" in p for p in found) and len(found) == 4, found
    assert cell_problems(numbers.to_html()) and any("index" in p for p in cell_problems(numbers.to_html()))


@pytest.mark.e2e
def test_no_report_table_holds_a_pre_formatted_number_or_nan(hostile):  # noqa: F811
    reports = sorted((Path(hostile) / "reports").glob("*.html"))
    assert len(reports) >= 17, [p.name for p in reports]
    problems = [f"{p.name}: {x}" for p in reports for x in cell_problems(p.read_text(encoding="utf-8"))]
    assert not problems, f"{len(problems)} cells escaped pipeline/tables.py:\n" + "\n".join(problems[:60])
