"""Sphinx extension for the book: each script once per page.

jupyter-book 1 lets sphinx-thebe register its inline configuration twice (``const THEBE_JS_URL`` declared
twice is a console error on every page) and sphinx-togglebutton repeats its selector. Identical
``<script>`` entries are dropped, keeping the first, so the page loads each asset once.
"""

from __future__ import annotations


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # an inline script's filename is None from one extension and "" from another
        key = (getattr(script, "filename", None) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}

