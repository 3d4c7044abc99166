"""Markdown tables from DataFrames, and the report's Markdown as one self-contained HTML page.

``markdown_table(df)`` writes a GitHub table (numeric columns right-aligned, NaN as "–", data escaped
so it cannot turn into Markdown or HTML). ``render_html(markdown, figures)`` renders Markdown with
markdown-it-py (CommonMark + tables, raw HTML off) and embeds every image as a data URI, so the page
opens anywhere with no other file next to it.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from markdown_it.token import Token

MISSING = "–"  # an en dash: how a missing value (NaN, None, NA) reads in a table

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&#~])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword "_" is never emphasis
_NUMBER = re.compile(r"^[-+−]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$|^[-+]?(inf|nan)$", re.IGNORECASE)

CSS = """
:root{color-scheme:light}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;
     max-width:1100px;margin:2em auto;padding:0 1.2em}
h1{font-size:1.7em;border-bottom:1px solid #d8dee4;padding-bottom:.3em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #d8dee4;padding-bottom:.2em}
h3{font-size:1.1em;margin-top:1.4em}
code{font:.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
     background:#eff1f3;padding:.1em .35em;border-radius:4px}
.table-wrap{overflow-x:auto;margin:.8em 0}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:4px 8px;white-space:nowrap}
th{background:#f3f5f7;font-weight:600}
tbody tr:nth-child(even){background:#f8f9fa}
img{max-width:100%;height:auto;border:1px solid #e4e7ea;border-radius:4px}
li{margin:.2em 0}
""".strip()


def escape_markdown(text: str) -> str:
    """Data as literal Markdown text: nothing in it can become emphasis, code, a link, HTML or a table
    column. Use it for any data (paths, names, messages) put into the report's Markdown."""
    one_line = " ".join(str(text).splitlines())  # a newline could start a heading, list or fence
    return _EDGE_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", one_line))


def _cell(text: str) -> str:
    return escape_markdown(" ".join(str(text).split()))  # a newline would end the table row


def _is_number_column(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _format(value, floatfmt: str, integral: bool) -> str:
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if integral else format(value, floatfmt)
    return str(value)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """``df`` as a GitHub Markdown table: numeric columns right-aligned (``---:``), floats as ``floatfmt``
    (a float column whose values are all whole numbers, e.g. counts with a gap, prints as integers),
    missing values as "–". An empty frame gives ``_(none)_``."""
    if df.empty:
        return "_(none)_"
    numeric = [_is_number_column(df[c]) for c in df.columns]
    integral = []
    for c, num in zip(df.columns, numeric):
        vals = df[c].dropna()
        integral.append(bool(num and pd.api.types.is_float_dtype(df[c]) and len(vals)
                             and (vals == vals.round()).all() and vals.abs().max() < 2**53))
    lines = ["| " + " | ".join(_cell(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for row in df.itertuples(index=False, name=None):
        cells = [_cell(_format(v, floatfmt, i)) for v, i in zip(row, integral)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _data_uri(path: str | Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    with open(path, "rb") as fh:
        return f"data:{mime};base64,{base64.b64encode(fh.read()).decode('ascii')}"


def _embed_images(tokens: list[Token], figures: Mapping[str, str | Path]) -> None:
    for tok in tokens:
        for child in tok.children or ():
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            if src.startswith("data:"):
                continue
            if src not in figures:  # never fetched, never an error: shown as its text
                child.type, child.tag, child.attrs = "text", "", {}
                child.content = f"[image {src[:80]}: {child.content[:80]}]"
                child.children = []
                continue
            child.attrSet("src", _data_uri(figures[src]))


def _align_numeric_columns(tokens: list[Token]) -> None:
    """Right-align table columns whose body cells are all numbers (or missing) when the Markdown
    gave no alignment, so hand-written tables read like :func:`markdown_table`'s."""
    i = 0
    while i < len(tokens):
        if tokens[i].type != "table_open":
            i += 1
            continue
        cells: dict[int, list[tuple[Token, Token, bool]]] = {}  # column -> (open, inline, is_body)
        col, body = 0, False
        while tokens[i].type != "table_close":
            t = tokens[i]
            if t.type == "tbody_open":
                body = True
            elif t.type == "tr_open":
                col = 0
            elif t.type in ("th_open", "td_open"):
                cells.setdefault(col, []).append((t, tokens[i + 1], body))
                col += 1
            i += 1
        for column in cells.values():
            texts = [inline.content.strip() for _, inline, is_body in column if is_body]
            filled = [x for x in texts if x and x != MISSING]
            if not filled or not all(_NUMBER.match(x.replace("\\", "")) for x in filled):
                continue
            for open_tok, _, _ in column:
                if not open_tok.attrGet("style"):
                    open_tok.attrSet("style", "text-align:right")
        i += 1


def _markdown_it() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    default_open = md.renderer.rules.get("table_open")
    default_close = md.renderer.rules.get("table_close")

    def table_open(self, tokens, idx, options, env):  # wide tables scroll instead of widening the page
        inner = default_open(tokens, idx, options, env) if default_open else \
            self.renderToken(tokens, idx, options, env)
        return '<div class="table-wrap">' + inner

    def table_close(self, tokens, idx, options, env):
        inner = default_close(tokens, idx, options, env) if default_close else \
            self.renderToken(tokens, idx, options, env)
        return inner + "</div>\n"

    md.add_render_rule("table_open", table_open)
    md.add_render_rule("table_close", table_close)
    return md


def render_html(markdown: str, figures: Mapping[str, str | Path],
                title: str = "SELU vs ReLU report") -> str:
    """One self-contained HTML page from ``markdown``.

    ``figures`` maps each image path used in the Markdown (e.g. ``figures/x.png``) to its file on
    disk; every image is embedded as a data URI (an image without a file is shown as its text, never
    fetched). Raw HTML in the Markdown is shown as text, never run.
    """
    md = _markdown_it()
    env: dict = {}
    tokens = md.parse(markdown, env)
    _embed_images(tokens, figures)
    _align_numeric_columns(tokens)
    body = md.renderer.render(tokens, md.options, env)
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n"
            f"<body>\n{body}</body>\n</html>\n")
