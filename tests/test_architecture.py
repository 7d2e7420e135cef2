"""The package's layers (docs/architecture.md): every module imports only from its room's floor or below,
and no set of modules imports each other in a circle. Imports inside functions count the same as
top-level ones: a lazy import hides a dependency from the reader, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitlab"

# Floors from the bottom up, by subpackage (or top-level module): every module of a floor imports only from
# its own floor or below. docs/architecture.md draws the same table (a test below keeps the two equal).
LAYERS: dict[str, tuple[str, ...]] = {
    "base": ("errors", "files", "version", "faces"),
    "foundations": ("models", "data"),
    "config": ("config",),
    "images": ("images",),
    "inference": ("inference",),
    "figures": ("figures",),
    "runs": ("runs",),
    "outputs": ("tracking", "export", "serving"),
    "training": ("training",),
    "tuning": ("tuning", "doctor"),
    "applications": ("cli", "__main__", "digitlab"),
}
FLOOR = {room: number for number, rooms in enumerate(LAYERS.values()) for room in rooms}


def room_of(module: str) -> str:
    """The floor's unit a module belongs to: 'inference' for inference.ood, 'config' for config, 'cli' for cli.train."""
    return module.split(".")[0]


def module_name(path: Path, root: Path) -> str:
    """'data' for digitlab/data/datasets.py, 'cli' for digitlab/cli/__init__.py, 'digitlab' for the package itself."""
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
        f"{room} has no layer: add it to LAYERS in tests/test_architecture.py and to docs/architecture.md"
        for room in sorted({room_of(module) for module in graph} - set(floor))
    ]
    names = list(LAYERS)
    for module, targets in sorted(graph.items()):
        here = floor.get(room_of(module))
        for target in sorted(targets):
            there = floor.get(room_of(target))
            if here is not None and there is not None and there > here:
                lines.append(f"upward import: {module} ({names[here]}) imports {target} ({names[there]})")
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
    assert "files" in graph and "cli.train" in graph and "inference.ood" in graph  # the walk found the package
    report = problems(graph, FLOOR)
    assert not report, "\n".join(report)


def test_the_layer_table_names_only_rooms_that_exist():
    stale = sorted(set(FLOOR) - {room_of(module) for module in import_graph()})
    assert not stale, f"LAYERS names packages or modules that do not exist: {stale}"


def test_the_architecture_page_draws_the_same_floors():
    """docs/architecture.md's floor table lists, top floor first, the same rooms as LAYERS."""
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    drawn = [tuple(part.strip("` ") for part in line.split("|")[2].split(",")) for line in rows]
    expected = [tuple(f"{room}/" if _is_package(room) else room for room in rooms) for rooms in LAYERS.values()]
    assert drawn == expected[::-1]


def _is_package(room: str) -> bool:
    return (PACKAGE / room / "__init__.py").is_file()


def test_the_bottom_modules_import_nothing_of_digitlab_but_errors():
    graph = import_graph()
    assert graph["errors"] == set() and graph["version"] == set()
    assert graph["files"] == {"errors"}


def test_top_level_keeps_few_modules_and_the_rest_lives_in_subpackages():
    modules = [path.stem for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "__main__")]
    packages = [path.parent.name for path in PACKAGE.glob("*/__init__.py")]
    assert len(modules) <= 8 and len(packages) >= 6, (modules, packages)


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "from ..training.train import fit\n",
            "upward import: data.datasets (foundations) imports training.train (training)",
        ),
        (
            "def later():\n    from ..figures import predictions\n",
            "upward import: data.datasets (foundations) imports figures.predictions (figures)",
        ),
        ("import digitlab.serving.app\n", "upward import: data.datasets (foundations) imports serving.app (outputs)"),
        (
            "from digitlab import __version__\n",
            "upward import: data.datasets (foundations) imports digitlab (applications)",
        ),
        ("from ..models.nets import MLP\n", None),
        ("from .augment import augment_batch\n", None),
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path, source, expected):
    root = tmp_path / "digitlab"
    files = ("__init__.py", "training/train.py", "figures/predictions.py", "serving/app.py", "models/nets.py")
    for name in (*files, "data/augment.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).parent.joinpath("__init__.py").touch()
        (root / name).touch()
    (root / "data" / "datasets.py").write_text(source)
    report = problems(import_graph(root), FLOOR)
    assert report == ([expected] if expected else [])


def test_the_checker_names_cycles_and_rooms_without_a_layer():
    graph = {
        "figures.predictions": {"figures.model"},
        "figures.model": {"figures.style", "figures.predictions"},
        "figures.style": set(),
        "newthing": set(),
    }
    report = problems(graph, FLOOR)
    assert "import cycle: figures.model -> figures.predictions -> figures.model" in report
    assert report[0].startswith("newthing has no layer")
