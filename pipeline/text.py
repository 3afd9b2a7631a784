"""Strings from inputs in the reports: shown as text nodes, never read as Markdown or HTML.

A report cell writes its prose in Markdown (trusted: it is written in the notebook) and marks
every string that came from an input file or params.yaml (tenant, tier, model, GPU, sweep and
file names, manifest values, messages that embed them) with `txt()`:

    display(md(f"**{op.usable_rps:.3f} req/s** on the curve {txt(op.curve)}."))

`txt()` turns the value into an inert token: its UTF-8 bytes in hex between two private-use
characters, which no Markdown rule can split, link, emphasise or end a code span with. `md()`
renders the prose to HTML and only then puts each value back, HTML-escaped, as text. So
`[click](javascript:alert(7))` stays those characters, a backtick in a file name cannot close a
code span and `<svg onload=...>` is never a tag. Escaping HTML alone is not enough in Markdown:
link syntax and backticks survive it.
"""

from __future__ import annotations

import functools
import re
from html import escape
from typing import Any

OPEN, CLOSE = "\ue000", "\ue001"
TOKEN = re.compile(f"{OPEN}([0-9a-f]*){CLOSE}")
_FORGED = str.maketrans({OPEN: "\ufffd", CLOSE: "\ufffd"})


def txt(value: Any) -> str:
    """A value from an input, as a token that `md()` shows as plain text (HTML-escaped, no Markdown)."""
    return OPEN + str(value).translate(_FORGED).encode("utf-8").hex() + CLOSE


def plain(value: Any) -> str:
    """The HTML of a value as a text node (quotes escaped too), for HTML built by hand."""
    return escape(str(value), quote=True)


@functools.cache
def _markdown() -> Any:
    import mistune

    # Raw HTML in the trusted prose is kept (escape=False); no javascript:/data: links even there.
    renderer = mistune.HTMLRenderer(escape=False, allow_harmful_protocols=False)
    return mistune.create_markdown(renderer=renderer, plugins=["strikethrough", "table"])


def to_html(source: str) -> str:
    """Render trusted Markdown prose to HTML, then put back each `txt()` value as escaped text."""
    html = str(_markdown()(source))
    return TOKEN.sub(lambda m: plain(bytes.fromhex(m[1]).decode("utf-8")), html)


def md(source: str) -> Any:
    """`to_html(source)` as an IPython HTML object: what a report cell passes to display()."""
    from IPython.display import HTML

    return HTML(to_html(source))
