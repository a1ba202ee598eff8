"""`cosybuild verify DIR`: re-check written artifacts with the installer's own readers."""

from __future__ import annotations

from pathlib import Path

from cosyinstall.bundle import KIND_OF, find_uploads, verify_uploads
from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import Reporter
from cosyinstall.zipread import ArtifactReader

__all__ = ["verify_dir"]


def verify_dir(directory: Path, reporter: Reporter) -> list[str]:
    """Check SHA256SUMS, then every member of every zip; returns one line per artifact."""
    uploads = find_uploads(str(directory))
    verify_uploads(uploads, {}, reporter)
    lines = []
    for name, upload in sorted(uploads.items()):
        if name not in KIND_OF:
            lines.append("%s: matches SHA256SUMS" % name)
            continue
        with ArtifactReader(upload.path, KIND_OF[name]) as reader:
            with reporter.task("verifying members of %s" % name, reader.manifest.total_size) as task:
                damage = reader.find_corrupt_member(task.advance)
            if damage:
                raise ArtifactRejected(damage)
            lines.append("%s: %d members verified, manifest %s" % (name, len(reader.manifest.files), reader.manifest.digest()[:12]))
    return lines
