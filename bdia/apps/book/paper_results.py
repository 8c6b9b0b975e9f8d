"""The real reproduction's results beside the ``ci`` ones: what ``make paper`` recorded (``book/build.py collect``)
in the repository's ``paper-results/`` folder, one subfolder per run, one JSON record per chapter, stamped with the
commit, the machine and the parameters. A chapter shows the newest record of its own, or says plainly that there is
none."""

from __future__ import annotations

import ast
import json
from pathlib import Path

__all__ = ["results_root", "committed_paper_run", "paper_status"]


def results_root(start=None) -> Path | None:
    """``paper-results`` of the repository that holds ``start`` (default: the working directory); None outside a
    checkout or where no run was committed."""
    start = Path(start or Path.cwd()).resolve()
    for parent in (start, *start.parents):
        if (parent / "paper-results").is_dir():
            return parent / "paper-results"
    return None


def committed_paper_run(chapter: str, root=None) -> dict | None:
    """The newest committed paper-profile record of ``chapter`` (e.g. ``"04_fid"``), or None."""
    root = Path(root) if root else results_root()
    if root is None:
        return None
    records = [json.loads(path.read_text()) for path in root.glob(f"*/{chapter}.json")]
    return max(records, key=lambda r: (r["created"], r["commit"]), default=None)


def _text(record: dict, key: str) -> str | None:
    value = record["glued"].get(key)
    if value is None:
        return None
    if value.get("markdown"):
        return value["markdown"]
    try:
        return str(ast.literal_eval(value["text"]))
    except (ValueError, SyntaxError):
        return value["text"]


def paper_status(chapter: str, keys, weights_key: str | None = None, root=None) -> str:
    """A paragraph for the chapter's paper-profile section: the committed run's findings (the glued sentences
    ``keys``), with the machine, commit, date and weights that produced them, or that no run has been committed."""
    record = committed_paper_run(chapter, root)
    if record is None:
        return ("No run of this chapter's `paper` profile with the published weights has been committed yet: "
                "`make paper` on a machine with a GPU and the Hugging Face hub reachable writes one into "
                "`paper-results/`, and this section shows it.")
    machine = record["machine"]
    where = machine.get("gpu", machine.get("processor", "an unnamed machine"))
    weights = _text(record, weights_key) if weights_key else None
    found = " ".join(text for text in (_text(record, key) for key in keys) if text)
    return (f"Committed `paper`-profile run of commit {record['commit']} on {where} ({record['created']}"
            + (f", weights: {weights}" if weights else "") + f"): {found}")
