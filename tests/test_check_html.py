"""The browser check of the built book (book/check_html.py) finds what it is meant to find.

Runs Debian's chromium through playwright on two tiny hand-written sites; skipped where there is no chromium.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("playwright")
spec = importlib.util.spec_from_file_location("check_html", ROOT / "book" / "check_html.py")
check_html = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_html)
pytestmark = pytest.mark.skipif(check_html.find_chromium() is None, reason="no chromium on this machine")

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b0d2b80000000049454e44ae426082")


def page(body: str) -> str:
    return f"<!doctype html><html><head><title>t</title></head><body><main>{body}</main></body></html>"


def test_a_sound_page_passes(tmp_path):
    (tmp_path / "pixel.png").write_bytes(PNG)
    (tmp_path / "other.html").write_text(page("<p>the other page</p>"))
    (tmp_path / "index.html").write_text(page('<p>fine</p><img src="pixel.png"><a href="other.html">next</a>'
                                              '<a href="https://example.org/">outside, not followed</a>'))
    assert check_html.check(tmp_path, screenshots=None) == []


def test_each_fault_is_reported(tmp_path):
    (tmp_path / "index.html").write_text(page(
        '<img src="missing.png"><p>see Fig. ?? and \\(x^2\\)</p><a href="gone.html">dead</a>'
        '<ul><li>\\Delta(t_i \\mid z_i)$ becomes</li></ul>'
        '<script>undefinedFunction()</script><script src="https://cdn.example.org/lib.js"></script>'
        '<script>console.warn("deprecated option")</script>'
        '<div class="cell_output"><div class="output stderr"><pre>UserWarning: careful</pre></div></div>'
        '<div class="cell_output"><div class="output stream"><pre>sampling: 40%|████  | 4/10 [00:01&lt;00:01, '
        '3.1it/s]</pre></div></div>'
        '<div class="cell_input" style="width: 200px"><pre style="overflow-x: auto">' + "x = 1  # " + "y" * 200 +
        '</pre></div>'
        '<div class="cell_output" style="width: 200px"><div class="output text_html" style="overflow-x: auto">'
        '<table><tr><td style="white-space: nowrap">wide table ' + "column " * 40 + '</td></tr></table></div></div>'
        '<mjx-container display="true" style="display: block; width: 200px; overflow-x: auto">'
        '<span style="white-space: nowrap">wide equation ' + "+ x " * 60 + '</span></mjx-container>'))
    (tmp_path / "forward.html").write_text('<meta http-equiv="Refresh" content="0; url=nowhere.html" />')
    problems = "\n".join(check_html.check(tmp_path, screenshots=tmp_path / "shots"))
    assert "image not loaded" in problems and "missing.png" in problems
    assert "unresolved '??'" in problems
    assert "raw LaTeX delimiters" in problems
    assert "LaTeX left unrendered in the prose (3 places), first: " in problems
    assert "broken internal link gone.html" in problems
    assert "undefinedFunction is not defined" in problems
    assert "the pages request cdn.example.org" in problems
    assert "forward.html: redirects to missing nowhere.html" in problems
    assert "console warning: deprecated option" in problems
    assert "a code block, table or equation scrolls sideways at 1280 px: 'x = 1  # yyy" in problems
    assert "a code block, table or equation scrolls sideways at 1280 px: 'wide table column" in problems
    assert "a code block, table or equation scrolls sideways at 1280 px: 'wide equation + x" in problems
    assert "a cell writes to stderr: 'UserWarning: careful'" in problems
    assert "a notice, warning or progress bar in a cell's output" in problems and "it/s]" in problems
    assert (tmp_path / "shots" / "index.html.png").is_file()
