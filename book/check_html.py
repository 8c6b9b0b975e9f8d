"""Open every page of the built book in headless Chromium, with the network cut off, and check it.

    python book/check_html.py [--site _build/site/_build/html] [--screenshots _build/screenshots]

Serves the book on localhost, blocks every request that leaves localhost (so the page must be
self-contained: MathJax included), and asserts for every page, each opened in a fresh browser profile as a
first visit: no console error or warning, no code block, table or displayed equation that scrolls sideways at
1280 px, every image loaded, every math node rendered by MathJax (no raw ``\\(`` left), no ``??`` or
unresolved roles, every internal link resolves, and no cell output shows a notice, a warning or a progress bar
(a stream to stderr, a widget, or text of that kind). Uses Debian's ``chromium`` (``/usr/bin/chromium``)
through playwright, never a downloaded browser. Exit status 1 lists the problems; a full-page screenshot of
each page is saved.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REDIRECT = re.compile(r'http-equiv="refresh"[^>]*url=([^"\'>]+)', re.IGNORECASE)
#: the console levels that are faults (the theme's own informational console.log lines are not)
FAULT_LEVELS = ("error", "warning", "assert")
#: what a notice, warning or progress bar in a cell's output looks like
NOTICE = re.compile(r"Warning\b|warnings\.warn|\bWARNING\b|it/s\]|s/it\]|\d+%\|[█▏▎▍▌▋▊▉ ]*\||"
                    r"^\[transformers\]|truncated because", re.MULTILINE)
#: a TeX command or a dollar sign in the prose: math that MyST did not parse (say, a line of it that begins
#: with "+" and became a list item)
RAW_LATEX = re.compile(r"\\[A-Za-z]{2,}|\$")
UNRESOLVED = ("??", "{glue:", "{cite}", "{numref}", "{eq}", "{doc}", ":::")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would bury the report
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


PAGE_CHECKS = """() => {
  const images = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  const maths = [...document.querySelectorAll('div.math, span.math')];
  const unrendered = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));
  const main = document.querySelector('main') || document.body;
  const text = main ? main.innerText : '';
  // the prose alone: what is left once code, rendered math and outputs are taken out
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, mjx-container, .cell_output, script, style').forEach(e => e.remove());
  const proseText = prose.textContent;
  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  const outputs = [...document.querySelectorAll('.cell_output, .output')];
  const stderr = [...document.querySelectorAll('.cell_output .stderr, .output.stderr')]
    .map(o => o.innerText.slice(0, 120));
  const widgets = document.querySelectorAll('.cell_output .jupyter-widgets, .widget-area').length;
  const outputText = outputs.map(o => o.innerText).join(String.fromCharCode(10));
  const boxes = [...document.querySelectorAll(
    '.cell_input pre, .cell_output pre, .cell_output .output, .pst-scrollable-table-container, ' +
    'mjx-container[display="true"]')];
  const scrolling = boxes.filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1)
    .map(b => b.innerText.split(String.fromCharCode(10)).reduce((a, c) => a.length >= c.length ? a : c, '')
    .slice(0, 80));
  return {images, maths: maths.length, unrendered, text, proseText, links, stderr, widgets, outputText, scrolling};
}"""


def check(site: Path, screenshots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        return ["no chromium on this machine (Debian: apt-get install chromium; make chromium)"]
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and p.name not in ("genindex.html",
                                                                                                    "search.html"))
    if not pages:
        return [f"no HTML pages under {site}: build the book first (make book)"]
    server, base = serve(site)
    problems: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            blocked: list[str] = []

            def route(r):
                host = urlparse(r.request.url).hostname
                if host in ("127.0.0.1", "localhost") or r.request.url.startswith(("data:", "blob:")):
                    return r.continue_()
                blocked.append(r.request.url)
                return r.abort()

            for path in pages:
                rel = path.relative_to(site).as_posix()
                refresh = REDIRECT.search(path.read_text(errors="replace"))
                if refresh:  # the root index only forwards to the first chapter
                    if not (path.parent / refresh.group(1)).exists():
                        problems.append(f"{rel}: redirects to missing {refresh.group(1)}")
                    continue
                # a fresh profile per page: every page is checked as a reader's first visit (empty local storage)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.route("**/*", route)
                page = context.new_page()
                errors: list[str] = []
                page.on("console", lambda msg, e=errors: e.append(f"{msg.type}: {msg.text}")
                        if msg.type in FAULT_LEVELS else None)
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.goto(base + rel, wait_until="load")
                page.wait_for_timeout(300)
                try:  # MathJax typesets asynchronously
                    page.wait_for_function("() => !window.MathJax || !MathJax.startup || "
                                           "MathJax.startup.promise.then(() => true)", timeout=20000)
                    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
                except Exception as error:  # noqa: BLE001 - reported below as unrendered math
                    errors.append(f"MathJax did not finish: {error}")
                result = page.evaluate(PAGE_CHECKS)
                for message in errors:
                    problems.append(f"{rel}: console {message[:200]}")
                for text in result["stderr"]:
                    problems.append(f"{rel}: a cell writes to stderr: {text!r}")
                for line in result["scrolling"]:
                    problems.append(f"{rel}: a code block, table or equation scrolls sideways at 1280 px: {line!r}")
                if result["widgets"]:
                    problems.append(f"{rel}: {result['widgets']} widget output(s) (a progress bar?) in the cells")
                for match in NOTICE.finditer(result["outputText"]):
                    line = result["outputText"][max(0, match.start() - 40):match.end() + 40].replace("\n", " ")
                    problems.append(f"{rel}: a notice, warning or progress bar in a cell's output: {line!r}")
                for src in result["images"]:
                    problems.append(f"{rel}: image not loaded: {src}")
                for math in result["unrendered"]:
                    problems.append(f"{rel}: math not rendered: {math!r}")
                if "\\(" in result["text"] or "\\[" in result["text"]:
                    problems.append(f"{rel}: raw LaTeX delimiters in the text")
                raw = list(RAW_LATEX.finditer(result["proseText"]))
                if raw:
                    near = result["proseText"][max(0, raw[0].start() - 40):raw[0].end() + 40].replace("\n", " ")
                    problems.append(f"{rel}: LaTeX left unrendered in the prose ({len(raw)} places), first: {near!r}")
                for token in UNRESOLVED:
                    if token in result["text"]:
                        at = result["text"].index(token)
                        problems.append(f"{rel}: unresolved {token!r} near {result['text'][max(0, at - 40):at + 40]!r}")
                for href in result["links"]:
                    target = urlparse(urljoin(base + rel, href))
                    if target.hostname not in ("127.0.0.1", "localhost") or not target.path:
                        continue
                    file = site / unquote(target.path.lstrip("/"))
                    if file.is_dir():
                        file = file / "index.html"
                    if not file.exists():
                        problems.append(f"{rel}: broken internal link {href}")
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots / (rel.replace("/", "_") + ".png")), full_page=True)
                print(f"checked {rel}: {result['maths']} math nodes, {len(result['links'])} links", flush=True)
                page.close()
                context.close()
            browser.close()
            for host in sorted({str(urlparse(u).hostname) for u in blocked}):
                problems.append(f"the pages request {host}: a downloaded or offline copy of the book would lack it")
    finally:
        server.shutdown()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "site" / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    args = parser.parse_args(argv)
    problems = check(args.site, args.screenshots)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
