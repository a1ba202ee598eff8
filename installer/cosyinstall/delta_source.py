"""Where a delta's on-box members are on this box, and the reader that stages them from there.

A member a delta leaves out is taken, in order, from the installed tree (where the recorded
manifests say a file of that sha256 is: the app, pretrained_models, the kept uv, and the
venv step's kept files in <to>/.cosyinstall/venv-files) or, failing that, from the full base
bundle kept in `<from>/base/`. Each is copied into staging through the same verified copy as
a zip member (size and sha256 checked while it streams), so a delta apply guarantees what a
full apply does; a copy that does not match is skipped for the next one, and when none
matches the apply stops (exit 3) before anything in <to> changed.
"""

from __future__ import annotations

import os
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from cosyinstall.artifact import APP_PREFIX, KIND_OF, MANIFEST_NAME, UV_REL, FileEntry
from cosyinstall.delta import Location, expected_on_box, index, missing, missing_sentence
from cosyinstall.errors import ArtifactRejected, is_disk_full
from cosyinstall.extract import rmtree
from cosyinstall.installed import installed_manifest
from cosyinstall.preflight import Finding
from cosyinstall.streams import copy_verified
from cosyinstall.tree import InstallTree
from cosyinstall.zipread import ArtifactReader, member_time

__all__ = ["BASE_DIR", "tree_locations", "base_locations", "delta_findings", "DeltaReader", "staging_reader",
           "keep_venv_files"]

BASE_DIR = "base"  # <from>/base/: the full base bundle, for a tree that no longer holds it
_HINT = "upload the full bundle (cosybuild pack without --since), or put the base bundle in %s"


def _sized(path: str, size: int) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) == size
    except OSError:
        return False


def tree_locations(tree: InstallTree) -> List[Location]:
    """Each file the recorded manifests place in the tree, where it is present with its recorded size."""
    found: List[Location] = []
    packages = installed_manifest(tree, "packages")
    for entry in packages.files if packages is not None else ():
        if entry.path.startswith(APP_PREFIX):
            path = tree.app_path(entry.path[len(APP_PREFIX):])
        elif entry.path == UV_REL:
            path = tree.bundled_uv
        else:
            path = os.path.join(tree.kept_venv_files, *entry.path.split("/"))
        found.append(Location(entry.sha256, entry.size, path))
    models = installed_manifest(tree, "models")
    for entry in models.files if models is not None else ():
        found.append(Location(entry.sha256, entry.size, tree.model_path(entry.path)))
    return [loc for loc in found if _sized(loc.path, loc.size)]


def base_locations(from_dir: str, names: Sequence[str]) -> List[Location]:
    """The members stored in the base bundle's zips under <from>/base (read from their manifests)."""
    found: List[Location] = []
    for name in sorted(names):
        path = os.path.join(from_dir, BASE_DIR, name)
        if name not in KIND_OF or not os.path.isfile(path):
            continue
        with ArtifactReader(path, KIND_OF[name]) as reader:
            found += [Location(e.sha256, e.size, path, e.path) for e in reader.manifest.stored_files()]
    return found


def _available(tree: InstallTree, from_dir: str, reader: ArtifactReader, steps: Sequence[str]
               ) -> Tuple[Dict[str, List[Location]], List[FileEntry]]:
    record = reader.manifest.delta()
    expected = expected_on_box(reader.manifest, steps)
    available = index(tree_locations(tree))
    absent = missing(expected, available)
    if absent and record is not None:
        available = index(tree_locations(tree) + base_locations(from_dir, list(record.base)))
        absent = missing(expected, available)
    return available, absent


def delta_findings(bundle: Any, tree: InstallTree, steps: List[Tuple[str, str]]) -> List[Finding]:
    """One row per delta artifact: are the members it expects on the box for the steps to run."""
    rows: List[Finding] = []
    names = [s for s, _digest in steps]
    for source in (bundle.packages, bundle.models):
        if source is None or source.handmade or source.reader.manifest.delta() is None:
            continue
        kind_steps = [s for s in names if (s == "models") == (source.reader.manifest.kind == "models")]
        _found, absent = _available(tree, bundle.from_dir, source.reader, kind_steps)
        label = source.label
        if absent:
            rows.append(Finding("%s delta" % label, False, missing_sentence(label, tree.root, absent),
                                hint=_HINT % os.path.join(bundle.from_dir, BASE_DIR), code=ArtifactRejected.exit_code))
        else:
            count = len(expected_on_box(source.reader.manifest, kind_steps))
            rows.append(Finding("%s delta" % label, True, "%d unchanged members found on the box" % count))
    return rows


class DeltaReader:
    """An artifact reader whose on-box members are read from their locations on the box."""

    def __init__(self, inner: Any, available: Dict[str, List[Location]], stored: Optional[Set[str]]) -> None:
        self.inner = inner
        self.label: str = inner.label
        self.path: str = inner.path
        self.available = available
        self._stored = stored  # None: the zip holds every member (a full or hand-made artifact)
        self._zips: Dict[str, ArtifactReader] = {}

    def _zip(self, path: str) -> ArtifactReader:
        if path not in self._zips:
            self._zips[path] = ArtifactReader(path)
        return self._zips[path]

    def stored(self, key: str) -> bool:
        """Whether the zip itself holds `key` (else it is copied from the box)."""
        return self._stored is None or key in self._stored

    def copy(self, key: str, size: int, sha256: Optional[str], dst: Optional[IO[bytes]],
             advance: Optional[Callable[[int], None]] = None) -> str:
        if self._stored is None or key in self._stored or sha256 is None:
            return self.inner.copy(key, size, sha256, dst, advance)
        for loc in self.available.get(sha256, []):
            if loc.size != size:
                continue
            start = dst.tell() if dst is not None else 0
            try:
                if loc.member is not None:
                    return self._zip(loc.path).copy(loc.member, size, sha256, dst, advance)
                with open(loc.path, "rb") as src:
                    return copy_verified(src, dst, size, sha256, loc.path, advance)
            except (ArtifactRejected, OSError) as exc:
                if is_disk_full(exc):
                    raise
                if dst is not None:  # this copy changed or vanished: try the next one
                    dst.seek(start)
                    dst.truncate()
        raise ArtifactRejected("%s is a delta, but no copy of %s (sha256 %s…) on the box matches: the full bundle "
                               "is needed" % (self.label, key, sha256[:12]),
                               _HINT % os.path.join(os.path.dirname(self.path), BASE_DIR))

    def mtime(self, key: str) -> float:
        if self._stored is None or key in self._stored:
            return self.inner.mtime(key)
        # Every member of a cosybuild zip has the same fixed time: the manifest's is theirs.
        return member_time(self.inner.zip.getinfo(MANIFEST_NAME))

    def close(self) -> None:
        for reader in self._zips.values():
            reader.close()
        self._zips.clear()

    def __enter__(self) -> "DeltaReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def staging_reader(tree: InstallTree, from_dir: str, source: Any, steps: Sequence[str]) -> DeltaReader:
    """The reader to stage `source` with: its zip, and for a delta the box's copies of what it leaves out."""
    reader = source.reader
    if source.handmade or reader.manifest.delta() is None:
        return DeltaReader(reader, {}, None)
    available, _absent = _available(tree, from_dir, reader, steps)
    return DeltaReader(reader, available, {e.path for e in reader.manifest.stored_files()})


def keep_venv_files(tree: InstallTree, staging: str) -> None:
    """Keep a finished venv step's staged files (wheels, requirements, CPython archive) as the next delta's base."""
    kept = tree.kept_venv_files
    old = kept + ".old"
    rmtree(old)
    if os.path.lexists(kept):
        os.replace(kept, old)
    os.replace(staging, kept)
    rmtree(old)
