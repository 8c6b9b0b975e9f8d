"""Execute the chapters and build the book.

    python book/build.py execute [--profile ci] [--only 01_ddim_to_bdia]   # jupytext + papermill
    python book/build.py html                                              # Jupyter Book, warnings are errors
    python book/build.py colab --out DIR                                   # unexecuted .ipynb for Colab

Chapters are MyST-markdown notebooks under notebooks/, listed in _toc.yml. `execute` converts
each with jupytext, runs it with papermill (parameters: profile, device) into
_build/executed/notebooks/, and records execution times in _build/executed/timings.json.
`html` stages the book's sources with the executed notebooks in place of the markdown ones and
runs `jupyter-book build -W`, so nothing is executed twice and a warning fails the build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"
STAGE = BUILD / "book-src"
SITE = BUILD / "site"


def chapters() -> list[str]:
    """Chapter paths (``notebooks/NAME``, no suffix) in the order of _toc.yml."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str) and node["file"].startswith("notebooks/"):
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return files


def to_notebook(chapter: str):
    import jupytext

    nb = jupytext.read(ROOT / f"{chapter}.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def execute(profile: str, device: str, only: list[str] | None) -> int:
    import nbformat
    import papermill

    out_dir = EXECUTED / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_path = EXECUTED / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for chapter in chapters():
        name = Path(chapter).name
        if only and name not in only:
            continue
        source = out_dir / f"{name}.input.ipynb"
        target = out_dir / f"{name}.ipynb"
        nbformat.write(to_notebook(chapter), source)
        print(f"executing {chapter} (profile={profile}, device={device})", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(source), str(target), parameters={"profile": profile, "device": device},
                                       kernel_name="python3", cwd=str(out_dir), progress_bar=False)
        finally:
            source.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        timings[name] = {"seconds": round(seconds, 1), "profile": profile, "device": device}
        print(f"  done in {seconds:.1f} s", flush=True)
        timings_path.write_text(json.dumps(timings, indent=2))
    return 0


def html() -> int:
    missing = [c for c in chapters() if not (EXECUTED / f"{c}.ipynb").exists()]
    if missing:
        print(f"not executed yet: {', '.join(missing)}; run `python book/build.py execute` first", file=sys.stderr)
        return 2
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy2(ROOT / name, STAGE / name)
    shutil.copytree(ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (STAGE / "notebooks").mkdir()
    import nbformat

    for chapter in chapters():
        nb = nbformat.read(EXECUTED / f"{chapter}.ipynb", as_version=4)
        for cell in nb.cells:  # papermill's copy of the parameters is noise for a reader
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags:
                tags.append("remove-cell")
        nbformat.write(nb, STAGE / f"{chapter}.ipynb")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(STAGE), "--path-output", str(SITE),
           "--warningiserror", "--keep-going", "--all"]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        print(f"\nThe book is built: open {SITE / '_build' / 'html' / 'index.html'}")
    return rc


def colab(out: Path) -> int:
    import nbformat

    for chapter in chapters():
        path = out / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(to_notebook(chapter), path)
        print(path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run the chapters with papermill")
    ex.add_argument("--profile", default="ci", choices=["ci", "paper"])
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--only", nargs="*", help="chapter names (e.g. 01_ddim_to_bdia)")
    sub.add_parser("html", help="build the HTML book from the executed chapters")
    co = sub.add_parser("colab", help="write unexecuted .ipynb files for Colab")
    co.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "execute":
        return execute(args.profile, args.device, args.only)
    if args.command == "html":
        return html()
    return colab(args.out)


if __name__ == "__main__":
    sys.exit(main())
