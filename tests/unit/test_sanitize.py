"""bench.sanitize: untrusted text shown, never obeyed (issue 18, item 17)."""
from __future__ import annotations

import markdown_it
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sanitize import md_text, neutral, visible


def test_visible_escapes_controls_bidi_and_surrogates_and_keeps_the_rest():
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("evil\u202egpj.exe") == "evil\\u202egpj.exe"
    assert visible("a\rb\x00c\x7fd\x85e") == "a\\rb\\x00c\\x7fd\\x85e"
    assert visible("x\ud800") == "x\\ud800"
    hidden = "\u2066iso\u2069 \u200fmark \ufeffbom \u2028line"
    assert visible(hidden) == "\\u2066iso\\u2069 \\u200fmark \\ufeffbom \\u2028line"
    kept = "pvt_tiny · ×2 — 中文 émoji \U0001f469\u200d\U0001f4bb a\tb\nc $x$ 100%"  # an emoji sequence keeps its ZWJ
    assert visible(kept) == kept


def test_neutral_goes_through_keys_lists_and_leaves_numbers():
    value = {"k\x1b": ["v\r", 3, None, {"n": 1.5}], "t": ("\u202e",)}
    assert neutral(value) == {"k\\x1b": ["v\\r", 3, None, {"n": 1.5}], "t": ("\\u202e",)}


def _rendered(text: str) -> str:
    return markdown_it.MarkdownIt("commonmark").renderInline(md_text(text))


def test_md_text_shows_links_images_html_and_pipes_as_text():
    for text, shown in [
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("![](http://evil/x.png)", "![](http://evil/x.png)"),
        ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
        ("<http://evil>", "&lt;http://evil&gt;"),
        ("a\\[x](y)", "a\\[x](y)"),  # the user's backslash cannot undo the escape
        ("a|b", "a|b"),
        ("two\nlines\r\n", "two lines\\r"),
        ("pvt_tiny", "pvt_tiny"),
    ]:
        assert _rendered(text) == shown, (text, md_text(text))
    assert md_text("http://x www.y") == "http\\://x www\\.y"  # GFM's autolinks start at :// and www.


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]()!<>\\|:/w.`*_&;#\"' ab\x1b\u202e\r\n")), max_size=40))
def test_md_text_never_renders_a_link_image_tag_or_control(text):
    line = md_text(text)
    assert "\n" not in line and not any(c in line for c in "\x1b\u202e\r")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(f"| c | d |\n|---|---|\n| {line} | end |\n")
    assert "<a " not in html and "<img" not in html
    assert html.count("<td") == 2 and "<td>end</td>" in html, html  # no "|" of the text ended its cell
