"""Preflight counts the disk that model steps need: archives unpacked in place, wheels unpacked in the venv."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from cosyinstall.artifact import ModelSteps
from cosyinstall.errors import ArtifactRejected
from cosyinstall.opened_bundle import ModelsSource
from cosyinstall.zipread import ArtifactReader


def test_pack_records_what_each_archive_unpacks_to_and_preflight_counts_it(demo_dist: Path) -> None:
    with ArtifactReader(str(demo_dist / "pretrained_models.zip"), "models") as reader:
        meta = reader.manifest.models_meta()
        (model,) = [m for m in meta.models if m.steps.unzip]
        (archive,) = model.steps.unzip
        # What the archive really unpacks to, read here with zipfile from the member's bytes.
        buffer = io.BytesIO()
        entry = next(e for e in reader.manifest.files if e.path == "%s/%s" % (model.name, archive))
        reader.copy(entry.path, entry.size, entry.sha256, buffer)
        with zipfile.ZipFile(buffer) as inner:
            real = sum(info.file_size for info in inner.infolist())
        assert model.steps.unpacked == {archive: real} and real > 0

        source = ModelsSource(reader)
        files = sum(e.size for e in reader.manifest.files)
        wheels = sum(e.size for e in reader.manifest.files
                     if e.path.split("/", 1)[1] in model.steps.install_wheels)
        assert wheels > 0
        assert source.need_bytes() == files + real + 2 * wheels


def test_unpacked_sizes_name_only_unzip_archives() -> None:
    with pytest.raises(ArtifactRejected, match="unpacked-bytes"):
        ModelSteps.from_json({"unzip": ["a.zip"], "unpacked-bytes": {"b.zip": 1}}, "m.steps")
    with pytest.raises(ArtifactRejected, match="unpacked-bytes"):
        ModelSteps.from_json({"unzip": ["a.zip"], "unpacked-bytes": {"a.zip": -1}}, "m.steps")
    steps = ModelSteps.from_json({"unzip": ["a.zip"], "unpacked-bytes": {"a.zip": 7}}, "m.steps")
    assert steps.to_json() == {"unzip": ["a.zip"], "unpacked-bytes": {"a.zip": 7}}
