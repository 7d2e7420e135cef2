"""File helpers at the bottom of the package: folders, atomic writes and JSON objects.

Every file digitlab writes goes through `atomic_write`: it is written to a temp file beside its
destination and renamed into place, so a crash leaves either the old file or the new one, never
half of one. Errors are one-line `RunError`s (or the error type the caller names) that name the path.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from .errors import DigitlabError, RunError

# The process umask, read once (os.umask can only be read by setting it): files written through a
# temp file get the mode a plain open() would have given them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def make_folder(folder: Path, description: str = "folder", error: type[DigitlabError] = RunError) -> Path:
    """mkdir -p, with a one-line `error` naming the folder when it cannot be created."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        raise error(f"cannot create {description} {folder}: {problem.strerror}") from None
    return folder


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(temp_path), then rename the temp file onto `path`; clean up on any failure."""
    path = Path(path)
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as error:
        raise RunError(f"cannot write {path}: {error.strerror}") from None
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give them the usual mode
        os.replace(temp, path)
    except OSError as error:
        raise RunError(f"cannot write {path}: {error.strerror or error}") from None
    except SafetensorError as error:  # safetensors reports its I/O failures (a full disk, say) this way
        raise RunError(f"cannot write {path}: {error}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_json(path: Path, value: object) -> None:
    """Write `value` as indented JSON, atomically."""
    atomic_write(path, lambda temp: Path(temp).write_text(json.dumps(value, indent=2) + "\n"))


def read_json(path: Path) -> dict:
    """The JSON object in `path`; a one-line RunError if it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path} is unreadable or corrupt ({error})") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} must hold a JSON object")
    return value
