"""Wheel-stub detection: sdists whose build only downloads the real wheel from another index.

Such an sdist (build backend `wheel_stub`) can never be installed offline, so it is refused at
lock time by reading its pyproject.toml, streamed out of the archive without building it.
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from typing import IO, Any, Iterable, Mapping

from cosyinstall.errors import ArtifactRejected

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["StubError", "read_pyproject", "stub_index", "check_stubs", "stub_from_uv_output"]

TIMEOUT = 60.0
_STUB_NAMES = ("wheel-stub", "wheel_stub")
# wheel-stub's own failure text, as uv relays it when it had to build the stub's metadata.
_UV_STUB = re.compile(r"installation of (\S+) for version (\S+) failed", re.IGNORECASE)
_UV_INDEX = re.compile(r"real wheel package\s+from\s+(\S+?)\.?\s", re.IGNORECASE)


class StubError(ArtifactRejected):
    """A locked package is a wheel-stub placeholder; exit 3 naming it and its real index."""


def _stub_error(name: str, version: str, index: str) -> StubError:
    where = index or "the index its publisher names"
    return StubError(
        "%s %s is a wheel-stub: its sdist only downloads the real wheel from %s when it is built, so it can never "
        "be installed offline" % (name, version, where),
        "add %s to [packages].extra-index-urls and %s to [packages].only-binary, then run cosybuild lock again"
        % (where, name))


def _top_level_pyproject(member: str) -> bool:
    parts = member.strip("/").split("/")
    return len(parts) == 2 and parts[1] == "pyproject.toml"


def _from_tar(stream: IO[bytes]) -> dict[str, Any] | None:
    # "r|*": a forward-only stream, so only the bytes up to pyproject.toml are read.
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            if member.isfile() and _top_level_pyproject(member.name):
                handle = archive.extractfile(member)
                return tomllib.loads(handle.read().decode("utf-8")) if handle else None
    return None


def _from_zip(stream: IO[bytes]) -> dict[str, Any] | None:
    # A zip's directory is at its end: spool it to disk (never to memory) to read it.
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, 1024 * 1024)
        spool.seek(0)
        with zipfile.ZipFile(spool) as archive:
            for name in archive.namelist():
                if _top_level_pyproject(name):
                    return tomllib.loads(archive.read(name).decode("utf-8"))
    return None


def read_pyproject(url: str, filename: str) -> dict[str, Any] | None:
    """The sdist's top-level pyproject.toml as a table, or None when it has none."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as stream:
            if filename.lower().endswith(".zip"):
                return _from_zip(stream)
            return _from_tar(stream)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactRejected("cannot read %s to check whether it is a wheel-stub (%s)" % (filename, exc),
                               "check the index and run cosybuild lock again") from exc


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[(@]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def stub_index(pyproject: Mapping[str, Any] | None) -> str | None:
    """The index a wheel-stub downloads from ('' if it names none); None if it is no stub."""
    if not pyproject:
        return None
    system = pyproject.get("build-system") or {}
    backend = str(system.get("build-backend") or "")
    requires = [_requirement_name(str(r)) for r in system.get("requires") or []]
    if not backend.startswith("wheel_stub") and "wheel-stub" not in requires:
        return None
    config = (pyproject.get("tool") or {}).get("wheel_stub") or {}
    return str(config.get("index_url") or "")


def check_stubs(sdists: Iterable[tuple[str, str, str, str]]) -> None:
    """Raise StubError for the first (name, version, filename, url) whose sdist is a wheel-stub."""
    for name, version, filename, url in sdists:
        index = stub_index(read_pyproject(url, filename))
        if index is not None:
            raise _stub_error(name, version, index)


def stub_from_uv_output(text: str) -> StubError | None:
    """A StubError when uv failed because it had to build a wheel-stub's metadata."""
    if not any(n in text for n in _STUB_NAMES):
        return None
    match = _UV_STUB.search(text)
    index = _UV_INDEX.search(text)
    name, version = (match.group(1).replace("_", "-"), match.group(2)) if match else ("a locked package", "")
    return _stub_error(name, version, index.group(1) if index else "")
