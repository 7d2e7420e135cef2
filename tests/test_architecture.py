"""The package's layers (docs/architecture.md): every module imports only from its own floor or below,
and no set of modules imports each other in a circle. Imports inside functions count the same as
top-level ones: a lazy import hides a dependency from the reader, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitlab"

# Floors from the bottom up; docs/architecture.md says what each holds and why.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": ("errors", "files", "version", "distributed", "batching", "workers"),
    "foundations": ("augment", "config", "fetch", "data", "models", "ink", "preprocess", "recipes", "fastmlp"),
    "inference": ("evaluate", "ood", "predict", "realworld", "numbers", "segmenter", "explain"),
    "runs": ("runcard", "runs", "runtable", "shipped", "ensemble"),
    "training": ("checkpoint", "divergence", "steps", "runlog", "train"),
    "outputs": (
        "figures",
        "dataviz",
        "modelviz",
        "explainviz",
        "viz",
        "tuneviz",
        "report",
        "export",
        "webexport",
        "experiment",
        "tracking",
        "compare",
    ),
    "applications": (
        "serveexplain",
        "serve",
        "tunespace",
        "tunestudy",
        "tuneoutput",
        "tune",
        "cli",
        "cli.common",
        "cli.explain",
        "cli.compare",
        "cli.runs",
        "cli.tools",
        "cli.train",
        "cli.tune",
        "__main__",
        "digitlab",
    ),
}
FLOOR = {module: number for number, modules in enumerate(LAYERS.values()) for module in modules}


def module_name(path: Path, root: Path) -> str:
    """'data' for digitlab/data.py, 'cli' for digitlab/cli/__init__.py, 'digitlab' for the package itself."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "digitlab"


def imported_modules(path: Path, root: Path) -> set[str]:
    """The package's modules that `path` imports anywhere in its body (functions included)."""
    name = module_name(path, root)
    package = [] if name == "digitlab" else name.split(".")
    if path.name != "__init__.py":
        package = package[:-1]  # a plain module's relative imports start from its package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".")[1:] for alias in node.names if alias.name.split(".")[0] == "digitlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "digitlab":
                base = node.module.split(".")[1:]
            else:
                continue
            # `from . import viz` imports the module viz; `from . import __version__` imports the package
            targets = [[*base, alias.name] if _is_module(root, [*base, alias.name]) else base for alias in node.names]
        else:
            continue
        found.update(".".join(target) or "digitlab" for target in targets)
    found.discard(name)
    return found


def _is_module(root: Path, parts: list[str]) -> bool:
    path = root.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(path, root): imported_modules(path, root) for path in sorted(root.rglob("*.py"))}


def problems(graph: dict[str, set[str]], floor: dict[str, int]) -> list[str]:
    """One line per module without a floor, per upward import, and per import cycle."""
    lines = [
        f"{module} has no layer: add it to LAYERS in tests/test_architecture.py and to docs/architecture.md"
        for module in sorted(set(graph) - set(floor))
    ]
    names = list(LAYERS)
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module in floor and target in floor and floor[target] > floor[module]:
                lines.append(
                    f"upward import: {module} ({names[floor[module]]}) imports {target} ({names[floor[target]]})"
                )
    lines.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) for each strongly connected group of modules that import each other."""
    found, state = [], {}  # state: 1 while on the current path, 2 when finished
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_every_import_goes_down_and_none_goes_round():
    graph = import_graph()
    assert "files" in graph and "cli.train" in graph and "digitlab" in graph  # the walk found the package
    report = problems(graph, FLOOR)
    assert not report, "\n".join(report)


def test_the_layer_table_names_only_modules_that_exist():
    stale = sorted(set(FLOOR) - set(import_graph()))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_the_bottom_modules_import_nothing_of_digitlab_but_errors():
    graph = import_graph()
    assert graph["errors"] == set() and graph["version"] == set()
    assert graph["files"] == {"errors"}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .train import fit\n", "upward import: data (foundations) imports train (training)"),
        ("def later():\n    from . import viz\n", "upward import: data (foundations) imports viz (outputs)"),
        ("import digitlab.serve\n", "upward import: data (foundations) imports serve (applications)"),
        ("from digitlab import __version__\n", "upward import: data (foundations) imports digitlab (applications)"),
        ("from .models import MLP\n", None),
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path, source, expected):
    root = tmp_path / "digitlab"
    root.mkdir()
    for name in ("__init__.py", "train.py", "viz.py", "serve.py", "models.py"):
        (root / name).write_text("")
    (root / "data.py").write_text(source)
    report = problems(import_graph(root), FLOOR)
    assert report == ([expected] if expected else [])


def test_the_checker_names_cycles_and_modules_without_a_layer():
    graph = {"viz": {"modelviz"}, "modelviz": {"figures", "viz"}, "figures": set(), "newthing": set()}
    report = problems(graph, FLOOR)
    assert "import cycle: modelviz -> viz -> modelviz" in report
    assert report[0].startswith("newthing has no layer")
