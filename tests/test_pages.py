"""How the chapters read on the page, checked on their sources: code that fits the code box, visible cells short
enough to read, a parameters cell of literals, and no computed sentence that lists more than four methods."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("*.md"))
CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)
#: the width of a code box at 1280 px: longer lines scroll sideways
MAX_LINE = 88
#: the longest visible code cell (a hidden cell shows a "show code" button instead)
MAX_VISIBLE_LINES = 25


def cells(path: Path) -> list[tuple[list[str], list[str]]]:
    """``(tags, code lines)`` of each code cell of a MyST chapter."""
    out = []
    for block in CELL.findall(path.read_text()):
        lines = block.splitlines()
        tags = []
        while lines and lines[0].startswith(":"):
            match = re.match(r":tags:\s*\[(.*)\]", lines[0])
            if match:
                tags = [t.strip() for t in match.group(1).split(",")]
            lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
        out.append((tags, lines))
    return out


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_code_fits_the_page(chapter):
    long = [(len(line), line) for _, lines in cells(chapter) for line in lines if len(line) > MAX_LINE]
    assert not long, f"{chapter.name}: lines over {MAX_LINE} characters scroll sideways: {long[:3]}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_visible_cells_are_short(chapter):
    visible = [(len(lines), lines[0]) for tags, lines in cells(chapter)
               if not {"hide-input", "remove-input", "remove-cell"} & set(tags) and len(lines) > MAX_VISIBLE_LINES]
    assert not visible, f"{chapter.name}: visible cells longer than {MAX_VISIBLE_LINES} lines: {visible}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_first_cell_holds_the_parameters_as_literals(chapter):
    tags, lines = cells(chapter)[0]
    assert tags == ["parameters"]
    for node in ast.parse("\n".join(lines)).body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)  # raises on anything but a literal


# a computed sentence names methods; more than four in one sentence reads as a generated list
METHOD_NAMES = re.compile(
    r"\b(?:BDIA-EDM|BDIA|DDIM(?: inversion)?|EDICT|O-BELM|null-text inversion|negative-prompt inversion|Heun|Euler|"
    r"FireFlow|the midpoint rule|RF-Solver|RF-Inversion|ddim|edict|obelm|heun|bdia-edm|bdia)\b(?: \([^)]*\))?", re.I)


def method_mentions(sentence: str) -> list[str]:
    """The method names of a sentence, one per mention; BDIA's gammas named together count once."""
    sentence = re.sub(r"BDIA at γ = [0-9.]+(?:(?:, | and )[0-9.]+)*", "BDIA", sentence)
    return METHOD_NAMES.findall(sentence)


def test_the_method_counter_counts_names_not_settings():
    assert len(method_mentions("BDIA at γ = 0.9, 0.96 and 1 and O-BELM stay at float64's rounding")) == 2
    assert len(method_mentions("ddim 100%, edict 100%, bdia (γ=0.9) 100%, bdia (γ=0.96) 100% and bdia (γ=1) 100%")) \
        == 5


def _build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", ROOT / "book" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_every_parameter_file_names_only_parameters_of_make_paper_chapters():
    # make paper runs these chapters; a misspelt parameter in a file would leave a chapter at its default
    build = _build_module()
    paper_chapters = re.search(r"^PAPER_CHAPTERS := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    declared = set().union(*(build.declared_parameters(f"notebooks/{name}") for name in paper_chapters))
    for params in sorted((ROOT / "book" / "params").glob("*.yml")):
        assert set(build.read_params([params])) <= declared, params.name


def test_a_parameter_no_chapter_declares_is_refused_before_anything_runs(tmp_path):
    build = _build_module()
    assert {"paper_num_samples", "profile", "device"} <= build.declared_parameters("notebooks/04_fid")
    with pytest.raises(SystemExit, match="no chapter run here \\(04_fid\\) has the parameter\\(s\\) paper_num_sampels"):
        build.execute("paper", "cpu", ["04_fid"], tmp_path, {"paper_num_sampels": 16, "budgets": [4]})
    assert not list(tmp_path.rglob("*.ipynb"))


def test_execute_refuses_fewer_than_one_job(tmp_path):
    build = _build_module()
    with pytest.raises(SystemExit, match="--jobs must be at least 1, got 0"):
        build.execute("ci", "cpu", ["01_ddim_to_bdia"], tmp_path, {}, jobs=0)
    assert not list(tmp_path.rglob("*.ipynb"))
