"""`cosybuild verify DIR`: re-check written artifacts with the installer's own readers."""

from __future__ import annotations

from pathlib import Path

from cosyinstall.artifact import KIND_OF, SUMS_NAME
from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import read_sums
from cosyinstall.zipread import ArtifactReader

__all__ = ["verify_dir"]


def verify_dir(directory: Path, reporter: Reporter) -> list[str]:
    """Check every member of every zip, then every file against SHA256SUMS; one line per file.

    Members first, so a damaged zip is reported by the member that broke, not only by its hash.
    """
    lines = []
    for name, entry in sorted(read_sums(str(directory)).items()):
        path = directory / name
        if not path.is_file():
            raise ArtifactRejected("%s is missing" % path, "run cosybuild pack again")
        line = "%s: matches %s" % (name, SUMS_NAME)
        if name in KIND_OF:
            with ArtifactReader(str(path), KIND_OF[name]) as reader:
                stored = reader.manifest.stored_files()
                with reporter.task("verifying members of %s" % name, sum(e.size for e in stored)) as task:
                    damage = reader.find_corrupt_member(task.advance)
                if damage:
                    raise ArtifactRejected(damage)
                line = "%s: %d members verified, manifest %s" % (name, len(reader.manifest.files),
                                                                 reader.manifest.digest()[:12])
                if len(stored) != len(reader.manifest.files):
                    line = "%s: delta, %d of %d members stored and verified, manifest %s" % (
                        name, len(stored), len(reader.manifest.files), reader.manifest.digest()[:12])
        with reporter.task("checking %s" % name, path.stat().st_size) as task:
            size, digest = hash_file(str(path), task.advance)
        if (entry.size is not None and size != entry.size) or digest != entry.sha256:
            raise ArtifactRejected("%s does not match %s" % (path, SUMS_NAME), "run cosybuild pack again")
        lines.append(line)
    return lines
