"""A package's public face imported on first use (PEP 562), so importing one module of a room, or the
command line, does not load every heavy library the room's other modules need (torch, matplotlib)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_face(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose public `names` map each to 'module' or
    'module:attribute' (module relative to the package; no attribute: the name is that attribute)."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        if name not in names:
            return submodule(package, name)
        module, _, attribute = names[name].partition(":")
        value = getattr(importlib.import_module(module, package), attribute or name)
        namespace[name] = value  # looked up once
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(names))

    return getattr_, dir_


def submodule(package: str, name: str) -> Any:
    """`package.name` when it is a module of the package (as a package that imports its rooms would offer
    them: `digitlab.figures`), else AttributeError."""
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{package}.{name}":
            raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
