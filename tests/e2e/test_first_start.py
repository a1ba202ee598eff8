"""The demo's first start through the CLI, offline: the synthesis probe decides readiness, and an
unmet [target.gpu] stops apply before anything changes (nvidia-smi is a STAND-IN: no GPU here)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from nvidiasmi import T4, install_standin
from support import free_port, offline, pyz, rewrite_sums, run, write_zip

pytestmark = pytest.mark.e2e


def test_broken_synthesis_is_not_ready_exit_5_with_status_and_answer(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    port = free_port()
    p = " ".join(pyz(dist, ""))
    script = f"""
{p} apply --from {dist} --to {to} --port {port} --launcher direct || exit 99
{p} stop --to {to} >/dev/null
touch {to}/BROKEN_SYNTHESIS
{p} start --to {to} --port {port} --launcher direct
echo "rc=$?"
"""
    proc = run(offline(script), timeout=600)
    out = proc.stdout + proc.stderr
    assert "server ready: http://127.0.0.1:%d/" % port in out and "synthesis probe got" in out, out
    assert "rc=5" in proc.stdout, out
    error = [line for line in proc.stderr.splitlines() if line.startswith("cosyinstall: error:")][-1]
    assert "POST http://127.0.0.1:%d/tts answered HTTP 500" % port in error
    assert "synthesis failed: BROKEN_SYNTHESIS" in error
    assert not (to / ".cosyinstall" / "server.pid").exists()  # nothing left running


def _with_gpu_requirement(dist: Path) -> None:
    """Add [target.gpu] to the packed demo's packages manifest, as pack writes it."""
    zpath = dist / "offline_packages.zip"
    with zipfile.ZipFile(zpath) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    out = []
    for info, data in members:
        if info.filename == "MANIFEST.json":
            doc = json.loads(data)
            doc["target"]["gpu"] = {"min-compute-capability": "8.0", "min-driver": "525.60.13", "min-memory-gb": 16}
            data = (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
        out.append((info, data))
    write_zip(zpath, out)
    rewrite_sums(dist)


def test_a_gpu_below_target_gpu_is_exit_4_before_anything_changes(dist: Path, tmp_path: Path) -> None:
    _with_gpu_requirement(dist)
    standin = install_standin(tmp_path / "nvidia-smi-standin", T4)
    to = tmp_path / "to"
    p = " ".join(pyz(dist, ""))
    proc = run(offline(f"PATH={standin}:$PATH {p} apply --from {dist} --to {to}; echo rc=$?"), timeout=300)
    out = proc.stdout + proc.stderr
    assert "rc=4" in proc.stdout, out
    assert "Tesla T4" in out and "compute capability 7.5 is below 8.0" in out
    assert "FAIL  gpu need" in proc.stdout
    assert not to.exists()
