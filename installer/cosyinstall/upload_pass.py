"""The staging of one apply as one read per upload: steps ask for members, then each zip is read once.

The steps (install_steps.py) say which members they need where (`add`); `run` then reads
every upload that has members to write or a SHA256SUMS line still to check exactly once,
through onepass.stage_one_pass (whole-file sha256 and verified, parallel extraction in the
same pass). The lists `add` returned are filled when `run` returns; nothing is committed
before, so a mismatch anywhere leaves <to> as it was.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from cosyinstall.artifact import FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.install_plan import Item
from cosyinstall.onepass import Target, stage_one_pass
from cosyinstall.progress import Reporter
from cosyinstall.uploads import Upload, mismatch_sentence, stat_key

__all__ = ["UploadPasses"]


class UploadPasses:
    def __init__(self, bundle: Any, jobs: int, reporter: Reporter) -> None:
        self.bundle = bundle
        self.jobs = jobs
        self.reporter = reporter
        self._targets: Dict[str, List[Target]] = {}
        self._readers: Dict[str, Any] = {}
        self._results: List[tuple] = []

    def add(self, reader: Any, items: List[Item], staging: str, durable: bool,
            on_done: Optional[Callable[[str, str], None]] = None) -> List[FileEntry]:
        """Ask for `items` of reader's zip under `staging`; the list returned is filled by run().

        `on_done(rel, path)` is told of each item as soon as it is written and verified.
        """
        staging = os.path.abspath(staging)
        targets = self._targets.setdefault(reader.path, [])
        self._readers[reader.path] = reader
        mine = []
        for item in items:
            target = Target(item, _inside(staging, item.rel), durable, on_done=on_done)
            targets.append(target)
            mine.append(target)
        written: List[FileEntry] = []
        self._results.append((mine, written))
        return written

    def run(self) -> Dict[str, Any]:
        """Read each upload once; returns the verified-cache entries of the uploads hashed."""
        unhashed: Dict[str, Upload] = dict(getattr(self.bundle, "unhashed", {}))
        by_path = {u.path: name for name, u in unhashed.items()}
        verified: Dict[str, Any] = {}
        paths = sorted(set(self._targets) | set(by_path))
        for path in paths:
            name = by_path.get(path)
            upload = unhashed.get(name) if name is not None else None
            reader = self._readers.get(path) or self._reader_for(path)
            expected = upload.expected.sha256 if upload is not None and upload.expected is not None else None
            stage_one_pass(reader, self._targets.get(path, []), expected, _mismatch(upload),
                           jobs=self.jobs, reporter=self.reporter)
            if upload is not None and expected is not None and name is not None:
                verified[name] = {"stat": stat_key(path), "sha256": expected}
        for targets, written in self._results:
            written.extend(t.entry for t in targets if t.entry is not None)
        return verified

    def _reader_for(self, path: str) -> Any:
        for source in (self.bundle.packages, self.bundle.models):
            if source is not None and source.path == path:
                return source.reader
        raise AssertionError("no opened reader for %s" % path)


def _mismatch(upload: Optional[Upload]) -> Any:
    if upload is None:
        return None

    def make(detail: str) -> ArtifactRejected:
        if detail.startswith(upload.path):
            # The whole file differs though the members read were intact: name the damage if there is one.
            return ArtifactRejected(mismatch_sentence(upload), "upload it again")
        return ArtifactRejected("%s does not match its line in SHA256SUMS: %s" % (upload.path, detail),
                                "upload it again")
    return make


def _inside(root: str, rel: str) -> str:
    from cosyinstall.extract import inside
    return inside(root, rel)
