"""The opened uploads, and what each step installs from them, whether cosybuild made them or a person did.

A built artifact lists every file with its hash; a hand-made zip is laid out the way the
user's deploy script unpacks it (wheels for uv, models under pretrained_models/), and its
files get their hashes while they are extracted.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional

from cosyinstall.artifact import (KIND_OF, PACKAGES_ZIP, REQUIREMENTS_REL, SUMS_NAME, UV_REL, WHEELS_DIR, ArtifactManifest,
                                  FileEntry, PackageRecord)
from cosyinstall.uploads import Reader, Upload, is_verified, open_reader, scan_uploads, verify_upload
from cosyinstall.errors import ArtifactRejected
from cosyinstall.handmade import HandmadeReader, wheel_name_version
from cosyinstall.install_plan import Item, app_items, model_items, step_digest, venv_items
from cosyinstall.preflight import Finding
from cosyinstall.progress import Reporter, human_bytes
from cosyinstall.tree import RESERVED_TOP
from cosyinstall.zipraw import deflate64_bytes

__all__ = ["Bundle", "PackagesSource", "ModelsSource", "artifact_failure"]

# Above this much Deflate64 data, a box without unzip is told how long the pure decoder takes.
SLOW_DEFLATE64 = 256 * 1024 * 1024
PYTHON_DEFLATE64_RATE = 4 * 1024 * 1024  # bytes/s of inflate64.py on one core, measured


class _Source:
    """An opened upload; `manifest` is None for a hand-made zip."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.handmade = reader.handmade
        self.label = reader.label
        self.path = reader.path
        # A delta's manifest as its full artifact carries it: the steps install and record the full bundle.
        self.manifest: Optional[ArtifactManifest] = None if self.handmade else reader.manifest.full()  # type: ignore[union-attr]


class PackagesSource(_Source):
    """offline_packages.zip: the app (built artifacts only) and what the venv step needs."""

    def __init__(self, reader: Reader) -> None:
        super().__init__(reader)
        self._venv_items = self._handmade_venv_items() if self.handmade else venv_items(self.manifest)  # type: ignore[arg-type]
        if self.manifest is not None:
            self._check_app_names()
            present = {i.rel for i in self._venv_items}
            if UV_REL not in present or REQUIREMENTS_REL not in present:
                raise ArtifactRejected("%s carries no %s or %s" % (self.path, UV_REL, REQUIREMENTS_REL),
                                       "build it with cosybuild pack")

    def _check_app_names(self) -> None:
        for item in app_items(self.manifest):
            top = item.rel.split("/")[0]
            if top in RESERVED_TOP:
                raise ArtifactRejected(
                    "%s: app member %s would overwrite the installer's own %s" % (self.path, item.key, top)
                )

    def _handmade_venv_items(self) -> List[Item]:
        reader: HandmadeReader = self.reader  # type: ignore[assignment]
        items: Dict[str, Item] = {}
        for member in reader.wheels():
            rel = "%s/%s" % (WHEELS_DIR, member.name.split("/")[-1])
            other = items.get(rel)
            if other is not None:
                twin = reader.by_name[other.key]
                if (twin.size, twin.crc) != (member.size, member.crc):
                    raise ArtifactRejected("%s holds two different wheels named %s (%s and %s)"
                                           % (self.path, rel[len(WHEELS_DIR) + 1:], other.key, member.name))
                continue
            items[rel] = Item(member.name, rel, member.size, None, False)
        if not items:
            raise ArtifactRejected("%s has no MANIFEST.json and holds no wheels (*.whl)" % self.path,
                                   "zip the folder of downloaded wheels, or build it with cosybuild pack")
        requirements = reader.requirements()
        if requirements is not None:
            items[REQUIREMENTS_REL] = Item(requirements.name, REQUIREMENTS_REL, requirements.size, None, False)
        uv = reader.uv_binary()
        if uv is not None:
            items[UV_REL] = Item(uv.name, UV_REL, uv.size, None, True)
        return [items[k] for k in sorted(items)]

    # -- what the steps read --------------------------------------------------------

    @property
    def has_app(self) -> bool:
        return bool(app_items(self.manifest))

    def app_items(self) -> List[Item]:
        return app_items(self.manifest)

    def venv_items(self) -> List[Item]:
        return list(self._venv_items)

    def wheel_rels(self) -> List[str]:
        return [i.rel for i in self._venv_items if i.rel.startswith(WHEELS_DIR + "/")]

    def uv_wheel_rel(self) -> Optional[str]:
        """A uv wheel among hand-made wheels (pip download uv): its binary can be used."""
        for rel in self.wheel_rels():
            parsed = wheel_name_version(os.path.basename(rel))
            if parsed and parsed[0].lower() == "uv":
                return rel
        return None

    def has(self, rel: str) -> bool:
        return any(i.rel == rel for i in self._venv_items)

    def digest(self, step: str) -> str:
        if self.manifest is not None:
            return step_digest(step, self.manifest)
        return self.reader.listing_digest(step)  # type: ignore[union-attr]

    def target(self) -> Dict[str, Any]:
        if self.manifest is not None:
            return dict(self.manifest.target)
        return self.reader.target()  # type: ignore[union-attr]

    def packages(self) -> List[PackageRecord]:
        """Every locked package (empty for a hand-made zip: unknown until installed)."""
        if self.manifest is None:
            return []
        return list(self.manifest.packages_meta().packages)

    def need_bytes(self, step: str) -> int:
        if step == "app":
            return sum(i.size for i in self.app_items())
        # Wheels are staged, then unpacked into the venv at roughly twice their size.
        return sum(i.size for i in self._venv_items) * 3


class ModelsSource(_Source):
    """pretrained_models.zip: one directory per model under pretrained_models/."""

    def __init__(self, reader: Reader) -> None:
        super().__init__(reader)
        if self.manifest is not None:
            self._items = model_items(self.manifest)
        else:
            hand: HandmadeReader = reader  # type: ignore[assignment]
            self._items = [Item(m.name, rel, m.size, None, m.executable) for m, rel in hand.model_files()]

    def items(self) -> List[Item]:
        return list(self._items)

    def digest(self, step: str = "models") -> str:
        if self.manifest is not None:
            return step_digest("models", self.manifest)
        return self.reader.listing_digest(step)  # type: ignore[union-attr]

    def target(self) -> Dict[str, Any]:
        return dict(self.manifest.target) if self.manifest is not None else {}

    def need_bytes(self) -> int:
        """The models' files, and what their steps write: unpacked archives, wheels unpacked in the venv."""
        total = sum(i.size for i in self._items)
        if self.manifest is None:
            return total
        sizes = {i.rel: i.size for i in self._items}
        for model in self.manifest.models_meta().models:
            total += sum(model.steps.unpacked.values())
            # A wheel installed into the venv takes about twice its size there.
            total += 2 * sum(sizes.get("%s/%s" % (model.name, w), 0) for w in model.steps.install_wheels)
        return total

    def record(self, entries: List[FileEntry]) -> ArtifactManifest:
        """The manifest to record as installed; for a hand-made zip, made from what was extracted."""
        if self.manifest is not None:
            return self.manifest
        return ArtifactManifest("models", "hand-made %s" % self.label, {}, tuple(sorted(entries, key=lambda e: e.path)),
                                {"handmade": True, "source": self.label})


class Bundle:
    """The opened artifacts of one upload folder, with one table row per artifact."""

    def __init__(self, from_dir: str, verified: Dict[str, Any], reporter: Reporter, defer: bool = False) -> None:
        self.from_dir = from_dir
        self.packages: Optional[PackagesSource] = None
        # With `defer` (apply), a zip's whole-file sha256 is left to the pass that extracts it
        # (onepass.py), so each upload is read once: name -> upload still to be hashed.
        self.unhashed: Dict[str, Upload] = {}
        self.models: Optional[ModelsSource] = None
        self.findings: List[Finding] = []
        self.verified: Dict[str, Any] = {}
        try:
            uploads, problems, has_sums = scan_uploads(from_dir)
        except ArtifactRejected as exc:
            self.findings.append(artifact_failure("artifacts", exc))
            return
        if not has_sums:
            self.findings.append(Finding("artifacts", False, "%s is missing: a truncated upload cannot be told from "
                                         "a complete one" % os.path.join(from_dir, SUMS_NAME), blocking=False))
        for name in sorted(set(uploads) | set(problems), key=lambda n: (n not in KIND_OF, n)):
            if name in problems:
                self.findings.append(artifact_failure(name, problems[name]))
                continue
            upload = uploads[name]
            try:
                source = None
                if name in KIND_OF:
                    reader = open_reader(upload)
                    try:
                        source = PackagesSource(reader) if name == PACKAGES_ZIP else ModelsSource(reader)
                    except BaseException:
                        reader.close()
                        raise
                    if name == PACKAGES_ZIP:
                        self.packages = source  # type: ignore[assignment]
                    else:
                        self.models = source  # type: ignore[assignment]
                if defer and source is not None and upload.expected is not None and not is_verified(upload, verified):
                    self.unhashed[name] = upload
                    self.findings.append(_artifact_row(name, upload.path, source, None))
                    continue
                entry = verify_upload(upload, verified, reporter)
                if entry is not None:
                    self.verified[name] = entry
                self.findings.append(_artifact_row(name, upload.path, source, entry is not None))
            except ArtifactRejected as exc:
                self.findings.append(artifact_failure(name, exc))
        slow = self._slow_deflate64()
        if slow is not None:
            self.findings.append(slow)

    def _slow_deflate64(self) -> Optional[Finding]:
        """Deflate64 without unzip is decoded in Python: fine for small files, slow for weights."""
        infos = []
        for source in (self.packages, self.models):
            if source is not None:
                reader = source.reader
                infos += [m.info for m in reader.members] if reader.handmade else list(reader.infos.values())  # type: ignore[union-attr]
        size = deflate64_bytes(infos)
        if size < SLOW_DEFLATE64 or shutil.which("unzip"):
            return None
        minutes = size / PYTHON_DEFLATE64_RATE / 60.0
        return Finding("unzip", False, "%s of the zips is Deflate64 and unzip is not installed: decoding it in Python "
                       "takes about %d minutes" % (human_bytes(size), max(1, round(minutes))), blocking=False,
                       hint="apt-get install unzip makes it fast")

    @property
    def handmade(self) -> List[str]:
        return [s.label for s in (self.packages, self.models) if s is not None and s.handmade]

    def target(self) -> Dict[str, Any]:
        for source in (self.packages, self.models):
            if source is not None and source.target():
                return source.target()
        return {}

    def close(self) -> None:
        for source in (self.packages, self.models):
            if source is not None:
                source.reader.close()


def artifact_failure(name: str, exc: ArtifactRejected) -> Finding:
    return Finding(name, False, exc.message, hint=exc.hint, code=ArtifactRejected.exit_code)


def _artifact_row(name: str, path: str, source: Any, summed: Optional[bool]) -> Finding:
    size = human_bytes(os.path.getsize(path))
    checked = "sha256 matches %s" % SUMS_NAME if summed else "not in %s" % SUMS_NAME
    if summed is None:
        checked = "sha256 checked against %s while extracting" % SUMS_NAME
    if source is None:
        return Finding(name, True, "%s, %s" % (size, checked))
    if source.handmade:
        return Finding(name, False, "%s, %s; hand-made (no MANIFEST.json): nothing in it can be verified"
                       % (size, checked), blocking=False)
    manifest = source.manifest
    return Finding(name, True, "%s, %s; %s %s, %d files listed with sha256"
                   % (size, checked, manifest.name, manifest.digest()[:12], len(manifest.files)))
