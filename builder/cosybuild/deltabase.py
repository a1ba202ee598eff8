"""The base of a delta bundle: read an old dist (`pack --since`) and check a delta against it (`verify --base`).

The old dist is trusted only after its SHA256SUMS checks out; then only the MANIFEST.json of
each zip is read (the members stay where they are). Every member a base manifest lists is
on the box once that bundle is applied, whether the base was itself full or a delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cosyinstall.artifact import KIND_OF, SUMS_NAME, ArtifactManifest
from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.progress import Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import read_sums
from cosyinstall.zipread import ArtifactReader
from cosyinstall.zipwrite import DeltaSpec

__all__ = ["Base", "read_base", "check_delta"]


@dataclass(frozen=True)
class Base:
    """An old dist, checked: the sha256 of each of its zips and what each zip's manifest lists."""

    directory: Path
    digests: dict[str, str]
    manifests: dict[str, ArtifactManifest]

    def known(self) -> frozenset[str]:
        """Every content (sha256) the box holds once this bundle is applied, across both zips."""
        return frozenset(e.sha256 for m in self.manifests.values() for e in m.files)

    def spec(self) -> DeltaSpec:
        return DeltaSpec(dict(self.digests), self.known())


def read_base(directory: Path, reporter: Reporter) -> Base:
    """Check the old dist's zips against its SHA256SUMS, then read their manifests."""
    if not directory.is_dir():
        raise UsageError("--since %s is not a directory" % directory)
    sums = read_sums(str(directory))
    digests: dict[str, str] = {}
    manifests: dict[str, ArtifactManifest] = {}
    for name in sorted(n for n in sums if n in KIND_OF):
        path = directory / name
        if not path.is_file():
            raise ArtifactRejected("%s is missing, although %s lists it" % (path, SUMS_NAME))
        with reporter.task("checking base %s" % name, path.stat().st_size) as task:
            _size, digest = hash_file(str(path), task.advance)
        if digest != sums[name].sha256:
            raise ArtifactRejected("%s does not match %s" % (path, SUMS_NAME), "pass the dist exactly as it was uploaded")
        with ArtifactReader(str(path), KIND_OF[name]) as reader:
            manifests[name] = reader.manifest
        digests[name] = digest
    if not manifests:
        raise ArtifactRejected("%s lists no artifact zip, so it cannot be a base" % (directory / SUMS_NAME))
    return Base(directory, digests, manifests)


def check_delta(delta_dir: Path, base: Base) -> list[str]:
    """Each delta zip names this base's digests, and every member it leaves out is in the base."""
    lines = []
    known = base.known()
    for name in sorted(n for n in read_sums(str(delta_dir)) if n in KIND_OF):
        with ArtifactReader(str(delta_dir / name), KIND_OF[name]) as reader:
            manifest = reader.manifest
        record = manifest.delta()
        if record is None:
            lines.append("%s: a full artifact, needs no base" % name)
            continue
        for base_name, digest in sorted(record.base.items()):
            if base.digests.get(base_name) != digest:
                raise ArtifactRejected("%s is a delta of another %s (sha256 %s), not of %s"
                                       % (delta_dir / name, base_name, digest[:12], base.directory / base_name))
        entries = manifest.by_path()
        absent = [p for p in record.on_box if entries[p].sha256 not in known]
        if absent:
            more = " and %d more" % (len(absent) - 1) if len(absent) > 1 else ""
            raise ArtifactRejected("%s expects %s%s on the box, which %s does not hold"
                                   % (delta_dir / name, absent[0], more, base.directory))
        lines.append("%s: delta of %s, %d of %d members expected from the base, all in it"
                     % (name, base.directory, len(record.on_box), len(manifest.files)))
    return lines
