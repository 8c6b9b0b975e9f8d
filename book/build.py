"""Execute the chapters and build the book.

    python book/build.py execute [--profile ci] [--only 01_ddim_to_bdia] [--out DIR] [--param NAME=VALUE]
                                 [--params FILE.yml]
    python book/build.py html                                              # Jupyter Book, warnings are errors
    python book/build.py colab --out DIR                                   # unexecuted .ipynb for Colab
    python book/build.py collect --executed DIR [--into paper-results]     # record a paper-profile run

Chapters are MyST-markdown notebooks under notebooks/, listed in _toc.yml. `execute` converts
each with jupytext, runs it with papermill (parameters: profile, device) into
_build/executed/notebooks/, and records execution times in _build/executed/timings.json.
`html` stages the book's sources with the executed notebooks in place of the markdown ones and
runs `jupyter-book build -W`, so nothing is executed twice and a warning fails the build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
#: MathJax, served from the built book itself so that a downloaded or offline copy shows its equations
MATHJAX = "mathjax@3.2.2"
EXECUTED = BUILD / "executed"
STAGE = BUILD / "book-src"
SITE = BUILD / "site"


def repository(root: Path = ROOT) -> tuple[str, str]:
    """``(url, colab branch)`` of the repository the book publishes: the ``origin`` remote of this clone when it
    is a hosted repository (so a fork publishes under its own URL), else ``[project.urls] Repository`` in
    pyproject.toml (also for a clone of a local path)."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())
    url = project["project"]["urls"]["Repository"]
    branch = project["tool"]["bdia"]["colab-branch"]
    try:
        remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        remote = ""
    if remote.startswith("git@") and ":" in remote:  # git@github.com:owner/name.git
        host, _, path = remote[4:].partition(":")
        remote = f"https://{host}/{path}"
    remote = re.sub(r"^ssh://git@", "https://", remote)
    # only a web address of a hosted repository can be linked; a clone of a local path keeps the default
    hosted = re.fullmatch(r"(https?://[^/\s]+/[^/\s]+/[^/\s]+?)(?:\.git)?/?", remote)
    if hosted:
        url = hosted.group(1)
    return url, branch


def published(text: str, root: Path = ROOT) -> str:
    """``text`` with the default repository URL replaced by this clone's (see :func:`repository`)."""
    import tomllib

    default = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    return text.replace(default, repository(root)[0])


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


def declared_parameters(chapter: str) -> set[str]:
    """The names a chapter's ``parameters`` cell assigns: the parameters papermill can set in it."""
    import ast

    cell = next(c for c in to_notebook(chapter).cells
                if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    targets = [t for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    targets += [node.target for node in ast.parse(cell.source).body if isinstance(node, ast.AnnAssign)]
    return {target.id for target in targets if isinstance(target, ast.Name)}


def _parameter(text: str) -> tuple[str, object]:
    """``name=value`` with value parsed as JSON (numbers, lists, strings in quotes), else taken as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"a parameter is name=value, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def read_params(files) -> dict:
    """The parameters of YAML files (``name: value`` each), later files winning."""
    import yaml

    params: dict = {}
    for file in files:
        loaded = yaml.safe_load(Path(file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"{file}: a parameter file is a mapping of parameter names to values")
        # ${NAME} in a value is the environment's NAME (where a dry run's stand-ins live, say)
        params.update({k: os.path.expandvars(v) if isinstance(v, str) else v for k, v in loaded.items()})
    return params


def _execute_chapter(chapter: str, out_dir: Path, parameters: dict) -> float:
    """Run one chapter with papermill into ``out_dir``; its seconds. A top-level function: the worker processes
    of ``execute --jobs`` import it."""
    import nbformat
    import papermill

    name = Path(chapter).name
    source = out_dir / f"{name}.input.ipynb"
    nbformat.write(to_notebook(chapter), source)
    print(f"executing {chapter} (profile={parameters['profile']}, device={parameters['device']})", flush=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(out_dir / f"{name}.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(out_dir), progress_bar=False)
    finally:
        source.unlink(missing_ok=True)
    return time.perf_counter() - start


def execute(profile: str, device: str, only: list[str] | None, out: Path | None = None,
            parameters: dict | None = None, jobs: int = 1) -> int:
    """Execute the chapters (``only`` those named), ``jobs`` at a time. The chapters run one torch thread each by
    default, so on two cores two chapters side by side do not slow each other; the longest (by the last recorded
    timings) start first."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {jobs}")
    # the kernels inherit these: a page shows the experiment, not third-party notices and progress bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = EXECUTED if out is None else Path(out)
    out_dir = root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    run = [chapter for chapter in chapters() if not only or Path(chapter).name in only]
    declared = {chapter: declared_parameters(chapter) for chapter in run}
    unknown = sorted(set(parameters or {}) - set().union(*declared.values()))
    if unknown:  # a misspelt parameter would otherwise leave the chapter at its default, silently
        raise SystemExit(f"no chapter run here ({', '.join(Path(c).name for c in run)}) has the parameter(s) "
                         f"{', '.join(unknown)}; their parameters cells declare "
                         f"{', '.join(sorted(set().union(*declared.values())))}")
    # each chapter gets the parameters it declares: one file serves chapters 4, 5 and 7
    mine = {chapter: {k: v for k, v in (parameters or {}).items() if k in declared[chapter]} for chapter in run}

    def record(chapter, seconds):
        name = Path(chapter).name
        timings[name] = {"seconds": round(seconds, 1), "profile": profile, "device": device, **mine[chapter]}
        print(f"  {name} done in {seconds:.1f} s", flush=True)
        timings_path.write_text(json.dumps(timings, indent=2))

    def arguments(chapter):
        return chapter, out_dir, {"profile": profile, "device": device, **mine[chapter]}

    if jobs == 1:
        for chapter in run:
            record(chapter, _execute_chapter(*arguments(chapter)))
        return 0
    run.sort(key=lambda c: -timings.get(Path(c).name, {}).get("seconds", 0.0))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_execute_chapter, *arguments(chapter)): chapter for chapter in run}
        for future in as_completed(futures):  # each chapter's time recorded as it finishes
            if future.exception() is not None:
                for other in futures:  # the chapters not started yet; those running finish first
                    other.cancel()
                raise future.exception()
            record(futures[future], future.result())
    return 0


def html() -> int:
    missing = [c for c in chapters() if not (EXECUTED / f"{c}.ipynb").exists()]
    if missing:
        print(f"not executed yet: {', '.join(missing)}; run `python book/build.py execute` first", file=sys.stderr)
        return 2
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    for name in ("_toc.yml", "references.bib"):
        shutil.copy2(ROOT / name, STAGE / name)
    stage_config(STAGE / "_config.yml")
    # not under _static: jupyter-book would add every .js file found there to every page
    shutil.copytree(vendored_mathjax(), STAGE / "_vendor" / "mathjax")
    shutil.copy2(ROOT / "book" / "_static" / "book.css", STAGE / "_vendor" / "book.css")
    shutil.copytree(ROOT / "book" / "_ext", STAGE / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns("*.py", "__pycache__", "_ext",
                                                                                "_static"))
    (STAGE / "notebooks").mkdir()
    import nbformat

    for chapter in chapters():
        nb = nbformat.read(EXECUTED / f"{chapter}.ipynb", as_version=4)
        for cell in nb.cells:  # papermill's copy of the parameters is noise for a reader
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags:
                tags.append("remove-cell")
        nbformat.write(nbformat.reads(published(nbformat.writes(nb)), as_version=4), STAGE / f"{chapter}.ipynb")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(STAGE), "--path-output", str(SITE),
           "--warningiserror", "--keep-going", "--all"]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        archive = shutil.make_archive(str(BUILD / "bdia-book-html"), "zip", SITE / "_build" / "html")
        print(f"\nThe book is built: open {SITE / '_build' / 'html' / 'index.html'}")
        print(f"For reading offline (equations included): {archive}")
    return rc


#: the chapters of the real reproduction (``make paper``): the paper profile at the paper's sizes
PAPER_CHAPTERS = ("04_fid", "05_editing", "07_rectified_flow")
#: the committed results of ``make paper`` runs, one folder per run (chapters show them beside their ci numbers)
PAPER_RESULTS = ROOT / "paper-results"


def glued_values(nb) -> dict:
    """Every value a notebook glued: ``{key: {"text": text/plain, "markdown": text/markdown or None}}``."""
    prefix = "application/papermill.record/"
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            data = out.get("data", {})
            if name and prefix + "text/plain" in data:
                values[name] = {"text": data[prefix + "text/plain"], "markdown": data.get(prefix + "text/markdown")}
    return values


def collect(executed: Path, into: Path, device: str) -> Path:
    """Write what the executed paper-profile chapters in ``executed`` glued into a new folder of ``into``, stamped
    with the commit, the machine (GPU name, driver, torch and CUDA versions) and the parameters: the record that
    the chapters show beside their ci numbers (``bdia.apps.book.paper_results``)."""
    import nbformat

    sys.path.insert(0, str(ROOT))
    from bdia.apps.gpu import gpu_machine

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
                            ).stdout.strip() or "unknown"
    machine = gpu_machine(device)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", machine.get("gpu", machine["processor"])).strip("-").lower()
    folder = Path(into) / f"{time.strftime('%Y-%m-%d')}-{slug}-{commit}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PAPER_CHAPTERS:
        path = Path(executed) / "notebooks" / f"{name}.ipynb"
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        record = {"chapter": name, "commit": commit, "created": time.strftime("%Y-%m-%d"), "machine": machine,
                  "parameters": nb.metadata.get("papermill", {}).get("parameters", {}), "glued": glued_values(nb)}
        (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"paper-profile results of {commit} on {machine.get('gpu', machine['processor'])}: {folder}")
    return folder


def vendored_mathjax() -> Path:
    """MathJax's browser build (es5, with its fonts), installed once from the npm registry into _build/vendor."""
    folder = BUILD / "vendor" / "node_modules" / "mathjax" / "es5"
    if not (folder / "tex-mml-chtml.js").is_file():
        (BUILD / "vendor").mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-save", "--prefix", str(BUILD / "vendor"), MATHJAX],
                       check=True)
    return folder


def stage_config(path: Path) -> None:
    """The book's _config.yml with the repository URL and Colab branch of this clone."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["repository"]["url"], config["repository"]["branch"] = repository()
    config["sphinx"]["config"]["html_static_path"] = ["_vendor"]  # copied into the site's _static
    config["sphinx"]["config"]["html_css_files"] = ["book.css"]
    config["sphinx"]["config"]["mathjax_path"] = "mathjax/tex-mml-chtml.js"
    config["sphinx"]["local_extensions"] = {"book_assets": "_ext"}
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def colab(out: Path) -> int:
    """The chapters as unexecuted .ipynb files, their install cells pointing at this clone's repository."""
    import nbformat

    for chapter in chapters():
        path = out / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.reads(published(nbformat.writes(to_notebook(chapter))), as_version=4), path)
        print(path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run the chapters with papermill")
    ex.add_argument("--profile", default="ci", choices=["ci", "paper"])
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--only", nargs="*", help="chapter names (e.g. 01_ddim_to_bdia)")
    ex.add_argument("--out", type=Path, default=None, help="folder for the executed notebooks (default: _build/executed)")
    ex.add_argument("--param", type=_parameter, action="append", default=[], metavar="NAME=VALUE",
                    help="a papermill parameter (value as JSON), e.g. --param paper_num_steps=4")
    ex.add_argument("--params", type=Path, action="append", default=[], metavar="FILE",
                    help="a YAML file of papermill parameters (name: value), e.g. book/params/paper-sdxl.yml; "
                         "--param wins over it")
    ex.add_argument("--jobs", type=int, default=1,
                    help="chapters executed at once, each in its own kernel (default 1; 2 on two cores: the chapters "
                         "use one torch thread each unless their `threads` parameter says otherwise)")
    cl = sub.add_parser("collect", help="record what executed paper-profile chapters found (make paper)")
    cl.add_argument("--executed", type=Path, required=True, help="the --out folder of `execute --profile paper`")
    cl.add_argument("--into", type=Path, default=PAPER_RESULTS)
    cl.add_argument("--device", default="cpu", help="the device the chapters ran on (stamped with the results)")
    sub.add_parser("html", help="build the HTML book from the executed chapters")
    co = sub.add_parser("colab", help="write unexecuted .ipynb files for Colab")
    co.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "execute":
        return execute(args.profile, args.device, args.only, args.out, {**read_params(args.params), **dict(args.param)},
                       args.jobs)
    if args.command == "html":
        return html()
    if args.command == "collect":
        collect(args.executed, args.into, args.device)
        return 0
    return colab(args.out)


if __name__ == "__main__":
    sys.exit(main())
