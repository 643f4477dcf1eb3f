"""The layout of ``helpers`` (../shared/COURSE_DESIGN.md, "Layout of helpers"), checked on the source.

An AST scan of every module: which ``helpers`` modules it imports (at the top or inside a function), what its
``__init__`` files hold, how long its functions are. Each rule has a test that feeds it a broken example, so
a rule that could never fail is caught too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "helpers"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
LESSON_ONLY = ("course", "widgets", "exercises")  # library code never imports these
DRAWS_ONLY_IN_PLOTS = ("data", "xray", "training", "evaluate", "breath")
MAX_FUNCTION_LINES = 80  # code lines of one function, its docstring not counted


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def imported_helpers(tree: ast.Module, known: set[str]) -> set[str]:
    """The ``helpers`` modules a module imports anywhere (``from helpers.x import y`` counts ``helpers.x.y``
    when that is a module, else ``helpers.x``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("helpers")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
    return found & known


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imported_helpers(tree, known) - {name} for name, tree in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""  # "" for the shared top-level modules


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imports in graph.items():
        for dep in imports:
            if subpackage(module) not in LESSON_ONLY and subpackage(dep) in LESSON_ONLY:
                out.append(f"{module} (library) imports {dep}")
            if subpackage(module) == "explain" and subpackage(dep) in ("training", "data", "xray"):
                out.append(f"{module} (explanations) imports {dep}")
    return out


def drawing_violations(modules: dict[str, ast.Module]) -> list[str]:
    out = []
    for name, tree in modules.items():
        if subpackage(name) not in DRAWS_ONLY_IN_PLOTS or name.endswith(".plots"):
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            out += [f"{name} imports {n}" for n in names if n.split(".")[0] in ("matplotlib", "seaborn")]
    return out


def long_functions(tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            doc = node.body[0] if node.body else None
            if (
                isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                lines -= doc.end_lineno - doc.lineno + 1
            if lines > limit:
                out.append(f"{node.name} ({lines} lines)")
    return out


def reexport_problems(name: str, tree: ast.Module, is_init: bool) -> list[str]:
    """Module ``__getattr__``, ``import x as x`` re-exports, ``__all__`` naming imported names, and any
    statement in an ``__init__`` beyond its docstring (and ``__version__`` at the top)."""
    out = []
    defined, imported = set(), set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
            if node.name == "__getattr__":
                out.append(f"{name}: module __getattr__")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                imported.add(alias.asname or alias.name.split(".")[0])
                if alias.asname and alias.asname == alias.name.split(".")[-1]:
                    out.append(f"{name}: re-export 'import {alias.name} as {alias.asname}'")
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            listed = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
            out += [
                f"{name}: __all__ lists {n}, which it imports" for n in sorted(listed & imported - defined)
            ]
    if is_init:
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        version = [
            n for n in body if isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"]
        ]
        if len(body) > (1 if name == "helpers" else 0) or (body and not version):
            out.append(f"{name}: __init__ holds code ({len(body)} statements); it is a table of contents")
    return out


# ------------------------------------------------------------------------------------------- the rules


def test_importing_helpers_imports_no_submodule():
    code = "import sys, helpers; print([m for m in sys.modules if m.startswith('helpers.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_no_import_cycles():
    assert find_cycle(import_graph(all_modules())) is None


def test_layering_rules_of_the_design():
    assert layering_violations(import_graph(all_modules())) == []


def test_only_plots_modules_draw_in_the_data_training_and_metric_code():
    assert drawing_violations(all_modules()) == []


def unused_imports(tree: ast.Module) -> list[str]:
    """Names a module imports at its top level and never uses: a re-export in disguise (``# noqa: F401``)."""
    imported = {
        (alias.asname or alias.name.split(".")[0]): alias.name
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", "") != "__future__"
        for alias in node.names
    }
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return sorted(full for name, full in imported.items() if name not in used)


def test_no_reexports_no_module_getattr_no_code_in_init_files():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        problems += reexport_problems(module_name(path), tree, path.name == "__init__.py")
        problems += [f"{module_name(path)} imports {name} and never uses it" for name in unused_imports(tree)]
    assert problems == []


def test_no_function_is_longer_than_a_screen_outside_the_widgets():
    too_long = {
        name: found
        for name, tree in all_modules().items()
        if subpackage(name) != "widgets" and (found := long_functions(tree))
    }
    assert too_long == {}


def test_every_subpackage_of_the_design_exists_with_a_docstring():
    for name in (
        "data",
        "xray",
        "training",
        "evaluate",
        "explain",
        "breath",
        "widgets",
        "exercises",
        "course",
    ):
        init = PACKAGE / name / "__init__.py"
        assert init.is_file(), name
        assert ast.get_docstring(ast.parse(init.read_text())), f"helpers/{name}/__init__.py has no docstring"


API = {
    "helpers.xray.dicom": ["read_xray"],
    "helpers.xray.rsna": ["load_labels"],
    "helpers.training.models": ["resnet18_xray"],
    "helpers.explain.cam": ["class_activation_map", "grad_cam", "guided_backprop", "guided_grad_cam"],
    "helpers.breath.audio": ["log_mel", "patches"],
    "helpers.explain.localisation": ["pointing_game"],
}


@pytest.mark.parametrize("module", sorted(API))
def test_the_design_api_lives_at_its_path(module):
    imported = __import__(module, fromlist=["_"])
    assert [name for name in API[module] if not callable(getattr(imported, name, None))] == []


# Which subpackages each notebook's import cells may name: the ones of its topic, plus the shared plumbing.
NOTEBOOK_TOPICS = {
    "00": {"data"},
    "01": {"data", "xray", "explain", "course", "widgets"},
    "02": {"data", "xray", "training", "course"},
    "03": {"data", "evaluate", "training", "course", "widgets"},
    "04": {"data", "explain", "course"},
    "05": {"data", "explain", "training", "evaluate", "course", "widgets"},
    "05b": {"data", "explain", "training", "evaluate", "course"},
    "06": {"data", "breath", "explain", "training", "widgets"},
    "07": {"data", "xray", "training", "evaluate", "explain", "course"},
    "08": {"data", "training", "course"},
}


def notebook_imports(path: Path) -> set[str]:
    """The ``helpers`` subpackages named by the notebook's code cells (``config`` etc. count as '')."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    tree = ast.parse(
        "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_name_the_subpackages_of_its_topic(path):
    allowed = NOTEBOOK_TOPICS[path.name.split("_")[0]] | {"", "exercises"}
    assert notebook_imports(path) - allowed == set()


MEAN_STD_EXEMPT = {
    "helpers.training.models",
    "helpers.xray.store",
    "helpers.xray.preprocess",
    "helpers.xray.eda",
}


def scales_by_mean_std(tree: ast.AST) -> list[int]:
    """Lines with ``(... - mean) / std`` where the names end in ``mean`` and ``std`` (``store.mean`` too)."""

    def named(node: ast.AST, suffix: str) -> bool:
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):  # meta["mean"]
            name = str(node.slice.value)
        else:
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
        return name.lower().endswith(suffix)

    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and named(node.right, "std")
        and isinstance(node.left, ast.BinOp)
        and isinstance(node.left.op, ast.Sub)
        and named(node.left.right, "mean")
    ]


def test_only_the_model_standardises_its_input():
    found = {
        name: lines
        for name, tree in all_modules().items()
        if name not in MEAN_STD_EXEMPT
        and not name.startswith("helpers.exercises")
        and (lines := scales_by_mean_std(tree))
    }
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and not source.lstrip().startswith(("%", "!")):
                if lines := scales_by_mean_std(ast.parse(source)):
                    found[f"{path.name} cell {i}"] = lines
    assert found == {}


# ----------------------------------------------------------------------------- the rules can fail


def test_the_rules_catch_broken_examples():
    cyclic = {"helpers.a.x": {"helpers.b.y"}, "helpers.b.y": {"helpers.a.x"}}
    assert find_cycle(cyclic) == ["helpers.a.x", "helpers.b.y", "helpers.a.x"]
    assert layering_violations({"helpers.explain.cam": {"helpers.training.loop"}}) == [
        "helpers.explain.cam (explanations) imports helpers.training.loop"
    ]
    assert layering_violations({"helpers.xray.store": {"helpers.course.pipeline"}})
    assert drawing_violations({"helpers.training.loop": ast.parse("import matplotlib.pyplot as plt")})
    assert drawing_violations({"helpers.training.plots": ast.parse("import matplotlib.pyplot as plt")}) == []
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(ast.parse(f'def f():\n    """doc"""\n{body}')) == []
    assert long_functions(ast.parse(f"def f():\n    y = 0\n{body}")) == [
        f"f ({MAX_FUNCTION_LINES + 1} lines)"
    ]
    lazy = "def __getattr__(name):\n    return name\n"
    assert reexport_problems("helpers.m", ast.parse(lazy), False) == ["helpers.m: module __getattr__"]
    shim = "from helpers.x import f as f\n__all__ = ['f']\n"
    assert len(reexport_problems("helpers.m", ast.parse(shim), False)) == 2
    assert reexport_problems("helpers.p", ast.parse('"""doc"""\nfrom helpers.p.m import f\n'), True)
    assert unused_imports(ast.parse("from helpers.x import f  # noqa: F401\n")) == ["f"]
    assert unused_imports(ast.parse("from helpers.x import f\ny = f(1)\n")) == []
    assert scales_by_mean_std(ast.parse("x = (image - store.mean) / store.std")) == [1]
    assert scales_by_mean_std(ast.parse("x = (image / 255 - meta['mean']) / meta['std']")) == [1]
    assert scales_by_mean_std(ast.parse("x = (image - lo) / span")) == []
