"""Text from a run directory (a model, host or flag name, an error message) is untrusted: it may
hold terminal escapes (ESC), bidirectional overrides (RLO, U+202E), carriage returns, lone
surrogates, or Markdown links and images. Every export shows such text, never acts on it.

The one sanitizer of bench (issue 28: it replaces three that each escaped control characters
their own way): export cells, terminal tables and one-line error messages all use it.

- ``visible``: each control, bidirectional-formatting or invisible character becomes the escape
  Python itself would print for it (``\\x1b``, ``\\u202e``, ``\\r``), so a `cat` of a Markdown or
  CSV export cannot drive the terminal, text cannot be reordered on screen, a plot label has no
  glyph that its font lacks, and a lone surrogate cannot stop the UTF-8 write. Newline and tab
  stay: they are whitespace, the Markdown cell joins them into spaces and CSV quotes them;
  ``one_line=True`` escapes them too (an error message, a path in a terminal table).
- ``terminal``: ``visible``, and rich's markup (``[bold]``, ``[link=...]``, ``[/]``) escaped, for
  a string printed in a rich table: shown as it is, never a style, a link or a MarkupError.
- ``neutral``: ``visible`` through the str, list and dict values of a record or env.json.
- ``md_text``: a Markdown-safe line: ``visible``, whitespace joined, HTML escaped (Markdown passes
  raw HTML through), and the syntax of links, images and autolinks backslash-escaped.

The standard library classes characters (``unicodedata``) and writes the escapes
(``unicode_escape``); no library does the choosing of which to escape or the Markdown escaping,
so those are written here by hand.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

KEPT = "\n\t"  # whitespace that every export shows harmlessly
# Invisible characters that are not in a control category but reorder or hide text on screen:
# the bidi marks (ALM, LRM, RLM), zero-width space, word joiner and invisible operators, BOM,
# and the line and paragraph separators (a line break to a terminal or an editor).
INVISIBLE = {"\u061c", "\u200b", "\u200e", "\u200f", "\u2028", "\u2029", "\u2060", "\u2061", "\u2062",
             "\u2063", "\u2064", "\ufeff"}
# The bidirectional classes of the embedding, override and isolate controls (U+202A-E, U+2066-9).
BIDI_CONTROLS = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}


def _hidden(ch: str) -> bool:
    if ch in KEPT:
        return False
    if ch in INVISIBLE:
        return True
    category = unicodedata.category(ch)
    return category in ("Cc", "Cs") or unicodedata.bidirectional(ch) in BIDI_CONTROLS


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape", "backslashreplace").decode("ascii")


# Everything that can need escaping is outside printable ASCII except the C0 controls and DEL.
_SUSPECT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\U0010ffff]")


_SUSPECT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\U0010ffff]")


def visible(text: str, one_line: bool = False) -> str:
    """``text`` with every control, bidi-formatting or invisible character written as its escape;
    ``one_line``: newline and tab as well."""
    if one_line:
        return _SUSPECT_ONE_LINE.sub(lambda m: _escape(m.group()) if m.group() in KEPT or _hidden(m.group())
                                     else m.group(), text)
    return _SUSPECT.sub(lambda m: _escape(m.group()) if _hidden(m.group()) else m.group(), text)


def terminal(text: object) -> str:
    """One cell or line for a rich Console: ``visible`` on one line, rich markup escaped."""
    from rich.markup import escape

    return escape(visible(str(text), one_line=True))


def neutral(value: Any) -> Any:
    """``visible`` applied to every string (keys too) in a JSON-like value; other values as they are."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {neutral(k): neutral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [neutral(v) for v in value]
    if isinstance(value, tuple):
        return tuple(neutral(v) for v in value)
    return value


# Markdown: a "]" that would close a link or image ("](" inline, "][" by reference, "]:" a
# reference definition; a bare "[95% CI]" stays as it is: with no definition it links nothing),
# the cell separator, and a backslash before ASCII punctuation (it would undo an escape written
# here). A backslash before anything else ("\x1b" as ``visible`` writes it) is literal text in
# Markdown and stays single. "<" and ">" (raw HTML, <autolinks>) are HTML-escaped.
_MD_PUNCTUATION = re.compile(r"(\\(?=[!-/:-@\[-`{-~])|\](?=[(\[:])|\|)")
# GFM's extended autolinks ("http://x", "www.x") are recognised at the ":" of "://" and at
# "www."; an escaped ":" or "." renders the same and links nothing.
_MD_AUTOLINK = re.compile(r"(:)(?=//)|(?<=\bwww)(\.)", re.IGNORECASE)


def md_text(text: Any) -> str:
    """One line of Markdown (a table cell, a list item, a heading) that shows ``text`` and does nothing else."""
    line = " ".join(visible(str(text)).split())
    line = _MD_PUNCTUATION.sub(r"\\\1", line)
    line = _MD_AUTOLINK.sub(lambda m: "\\" + m.group(), line)
    return html.escape(line, quote=False)


def shown_value(value: Any) -> str:
    """A bad value as an error message shows it: short, on one line, and never itself an error
    (a 5000-digit int cannot be turned into text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large integer"
    return visible(str(value).strip()[:40], one_line=True)
