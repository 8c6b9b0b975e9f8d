"""The library's boundaries, checked on its source: the layers import downwards only, no import cycle, no private
name crosses a module boundary, the core runs without the optional packages, the command line's help needs no
PyTorch, and no library file outgrows one responsibility."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bdia"
OPTIONAL = ("diffusers", "transformers", "sklearn", "matplotlib", "pandas", "accelerate", "safetensors", "PIL",
            "skimage", "huggingface_hub", "datasets")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never executed)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(name: str) -> list[tuple[str, list[str], bool]]:
    """``(module, imported names, at module level)`` of every executed import in a bdia module, relative ones
    resolved; ``from package import submodule`` counts as an import of the submodule."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    top = {id(n) for n in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in MODULES else base
                found.append((target, [alias.name], id(node) in top))
    return found


def layer(name: str) -> str:
    if name.startswith("bdia.apps") or name == "bdia.__main__":
        return "apps"
    if name.startswith("bdia.diffusers"):
        return "adapters"
    return "core"


def test_the_layers_import_downwards_only():
    allowed = {"core": {"core"}, "adapters": {"core", "adapters"}, "apps": {"core", "adapters", "apps"}}
    wrong = [f"{name} imports {target}" for name in MODULES for target, _, _ in imports(name)
             if target.startswith("bdia") and target in MODULES and layer(target) not in allowed[layer(name)]]
    assert not wrong, wrong


def test_the_core_has_no_module_level_import_of_an_optional_package():
    wrong = [f"{name} imports {target}" for name in MODULES if layer(name) == "core"
             for target, _, top in imports(name) if top and target.split(".")[0] in OPTIONAL]
    assert not wrong, wrong


def test_no_import_cycle_also_through_imports_inside_functions():
    graph = {name: {t for t, _, _ in imports(name) if t in MODULES and t != name} for name in MODULES}
    # importing bdia.x runs bdia/__init__ first: that edge is implicit and (lazy) __init__ files import nothing heavy
    for name, targets in graph.items():
        if MODULES[name].name == "__init__.py":
            assert targets <= {"bdia.lazy"} | {t for t in targets if layer(t) == layer(name)}, (name, targets)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_private_name_crosses_a_module_boundary():
    wrong = [f"{name} imports {target}.{n}" for name in MODULES for target, names, _ in imports(name)
             if target.startswith("bdia") for n in names if n.startswith("_") and not n.startswith("__")]
    # attributes: a private name read off an imported bdia module (module._name)
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        bound = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and (node.level or (node.module or "").startswith("bdia")) for alias in node.names
                 if f"{node.module or ''}.{alias.name}".strip(".") in MODULES or alias.name in
                 {m.rpartition(".")[2] for m in MODULES}}
        wrong += [f"{name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                  and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not wrong, wrong


def test_the_chapters_use_no_private_name_of_the_library():
    pattern = re.compile(r"\b(?:bdia(?:\.\w+)*|fid|bench|steps|digits|standins|toy)\._[a-z]\w*")
    used = [f"{nb.name}: {m.group(0)}" for nb in sorted((ROOT / "notebooks").glob("*.md"))
            for m in pattern.finditer(nb.read_text())]
    assert not used, used


def test_no_library_file_outgrows_one_responsibility():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long


def test_the_adapters_call_no_private_method_of_diffusers():
    for path in (PACKAGE / "diffusers").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b[A-Z]\w*(Scheduler|Pipeline|Model)\._[a-z]", text), path.name


def _run_blocked(blocked, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing any of ``blocked`` fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_the_core_imports_and_round_trips_without_the_optional_packages():
    code = (
        "import importlib, torch, bdia\n"
        f"for name in {sorted(n for n in MODULES if layer(n) == 'core')!r}:\n"
        "    importlib.import_module(name)\n"
        "from bdia.toy import GaussianMixture\n"
        "schedule = bdia.VPSchedule.scaled_linear()\n"
        "mixture = GaussianMixture(torch.randn(4, 2, dtype=torch.float64), std=0.3)\n"
        "model = mixture.eps_model(schedule)\n"
        "x0 = mixture.sample(32)\n"
        "for method in [m for m in bdia.INVERTIBLE_METHODS if not bdia.REGISTRY[m].schedules\n"
        "               and not bdia.REGISTRY[m].needs_guided_model]:\n"
        "    state = bdia.invert(model, x0, schedule, 20, method)\n"
        "    err = (bdia.sample(model, state, schedule, 20, method) - x0).norm() / x0.norm()\n"
        "    assert method == 'ddim' or err < 1e-10, (method, err)\n"
        "print('ok', sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{OPTIONAL!r} and sys.modules[m] is not None))\n")
    done = _run_blocked(OPTIONAL, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok []"


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["fid", "--help"], ["demo", "--help"]])
def test_the_command_line_help_needs_no_pytorch(argv):
    done = _run_blocked(("torch", "numpy"), f"from bdia.__main__ import main\nsys.exit(main({argv!r}))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: bdia" in done.stdout


def test_a_library_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, capsys):
    from bdia import __main__ as cli
    from bdia.errors import InvalidValueError

    def buggy(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), buggy))
    with pytest.raises(ZeroDivisionError):
        cli.main(["demo"])

    def refused(args):
        raise InvalidValueError("what was wrong and what is allowed")

    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), refused))
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err.strip() == "error: what was wrong and what is allowed"


def _with_func(parser, func):
    parser._subparsers._group_actions[0].choices["demo"].set_defaults(func=func)
    return parser
