"""Prepare steps for real: run in the venv's environment, logged, recorded; a killed step cleaned and
rerun; another GPU (nvidia-smi STAND-IN) rebuilding the GPU-bound step and the app's build outputs;
a failed step as exit 5; a silent but busy start not called hung."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosyinstall.artifact import PrepareStep, ServerSpec
from cosyinstall.errors import NotReady
from cosyinstall.progress import Reporter
from cosyinstall.server_prepare import after_ready, before_start, load_record
from cosyinstall.server_start import start_server
from cosyinstall.server_wait import wait_ready
from cosyinstall.tree import InstallTree

from nvidiasmi import A100, RTX4090, install_standin, path_with, set_gpu

pytestmark = pytest.mark.mpi

# Imitates a converter or an engine build: writes a partial file, works, then its proof file.
PREP = r'''
import os, sys, time
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "partial"), "w").write("half")
print("building %s with %s" % (out, sys.executable), flush=True)
if os.path.exists("HANG_ONCE"):
    os.unlink("HANG_ONCE")
    time.sleep(600)
if os.path.exists("FAIL"):
    print("error: out of GPU memory while building", flush=True)
    sys.exit(7)
with open("runs.log", "a") as fh:
    fh.write(out + "\n")
open(os.path.join(out, "config.json"), "w").write("{}")
print("built", flush=True)
'''

STEP = PrepareStep("engine", ("python", "prep.py", "work/engine"), "work/engine/config.json", ("work/engine",),
                   timeout=60.0, gpu_keyed=True)
SPEC = ServerSpec(command=("python", "app.py", "good", "{port}"), launcher="direct", prepare=(STEP,),
                  build_outputs=("work/flow.plan",))


@pytest.fixture
def gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = install_standin(tmp_path / "nvidia-smi-standin", A100)
    monkeypatch.setenv("PATH", path_with(folder))
    return folder


@pytest.fixture
def prep_tree(tree: InstallTree) -> InstallTree:
    root = Path(tree.root)
    (root / "prep.py").write_text(PREP)
    for name in ("runs.log", "HANG_ONCE", "FAIL"):
        (root / name).unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", str(root / "work")], check=True)
    return tree


def _reporter() -> Reporter:
    return Reporter(stream=io.StringIO(), live=False, line_interval=0.0)


def _runs(tree: InstallTree) -> int:
    path = Path(tree.root) / "runs.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_step_runs_once_in_the_venv_logged_and_recorded(prep_tree: InstallTree, gpu: Path) -> None:
    rep = _reporter()
    assert before_start(prep_tree, SPEC, rep) == ["engine"]
    assert before_start(prep_tree, SPEC, rep) == []
    assert _runs(prep_tree) == 1
    log = Path(prep_tree.prepare_log).read_text()
    assert "building work/engine with %s" % os.path.join(prep_tree.venv_bin, "python") in log
    entry = load_record(prep_tree)["steps"]["engine"]
    assert entry["gpu"] == {"name": "NVIDIA A100-SXM4-40GB", "compute_cap": "8.0", "driver_major": "535"}
    assert "prepare step engine: " in rep.stream.getvalue()  # elapsed time and the last log line


def test_a_killed_step_is_cleaned_and_rerun(prep_tree: InstallTree, gpu: Path) -> None:
    root = Path(prep_tree.root)
    (root / "HANG_ONCE").write_text("")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from cosyinstall.server_prepare import before_start\nfrom cosyinstall.artifact import ServerSpec\n"
            "from cosyinstall.tree import InstallTree\nimport json\n"
            "before_start(InstallTree(%r), ServerSpec.from_dict(json.loads(%r)))\n"
            % (str(Path(__file__).resolve().parents[2] / "installer"), prep_tree.root, json.dumps(SPEC.to_dict())))
    first = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    partial = root / "work" / "engine" / "partial"
    deadline = time.monotonic() + 30
    while not partial.exists() or (root / "HANG_ONCE").exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # the start dies; its step keeps running in its own session
    first.wait()
    running = load_record(prep_tree)["running"]
    assert os.path.exists("/proc/%d" % running["pid"])
    assert "engine" not in load_record(prep_tree).get("steps", {})

    rep = _reporter()
    assert before_start(prep_tree, SPEC, rep) == ["engine"]
    assert "killed or failed" in rep.stream.getvalue()
    assert not os.path.exists("/proc/%d" % running["pid"]) or open("/proc/%d/stat" % running["pid"]).read().split()[2] == "Z"
    assert (root / "work" / "engine" / "config.json").exists()
    assert _runs(prep_tree) == 1 and "running" not in load_record(prep_tree)


def test_another_gpu_rebuilds_the_step_and_removes_the_build_outputs(prep_tree: InstallTree, gpu: Path) -> None:
    before_start(prep_tree, SPEC, _reporter())
    plan = Path(prep_tree.root) / "work" / "flow.plan"
    plan.write_text("built by the app on its first start")
    after_ready(prep_tree)
    assert before_start(prep_tree, SPEC, _reporter()) == [] and plan.exists()

    set_gpu(gpu, RTX4090)  # the data disk moved to an instance with another GPU
    rep = _reporter()
    assert before_start(prep_tree, SPEC, rep) == ["engine"]
    said = rep.stream.getvalue()
    assert "NVIDIA A100-SXM4-40GB (compute capability 8.0, driver 535)" in said
    assert "NVIDIA GeForce RTX 4090 (compute capability 8.9, driver 550)" in said
    assert not plan.exists() and "work/flow.plan" in said
    assert _runs(prep_tree) == 2


def test_an_unfinished_first_start_removes_the_build_outputs(prep_tree: InstallTree, gpu: Path) -> None:
    before_start(prep_tree, SPEC, _reporter())
    assert load_record(prep_tree)["server"]["first-start"] is True
    plan = Path(prep_tree.root) / "work" / "flow.plan"
    plan.write_text("half-written when the server died")
    rep = _reporter()
    before_start(prep_tree, SPEC, rep)
    assert not plan.exists() and "ended before the server was ready" in rep.stream.getvalue()


def test_rebuild_forces_the_steps(prep_tree: InstallTree, gpu: Path) -> None:
    before_start(prep_tree, SPEC, _reporter())
    assert before_start(prep_tree, SPEC, _reporter(), rebuild=True) == ["engine"]
    assert _runs(prep_tree) == 2


def test_a_failed_step_is_exit_5_with_its_name_and_last_lines_and_reruns_next_time(
        prep_tree: InstallTree, gpu: Path) -> None:
    (Path(prep_tree.root) / "FAIL").write_text("")
    with pytest.raises(NotReady) as err:
        before_start(prep_tree, SPEC, _reporter())
    assert err.value.exit_code == 5
    text = err.value.sentence()
    assert "prepare step engine failed with status 7" in text and "out of GPU memory" in text
    assert prep_tree.prepare_log in text
    (Path(prep_tree.root) / "FAIL").unlink()
    assert before_start(prep_tree, SPEC, _reporter()) == ["engine"]


BUSY = r'''
import http.server, sys, time
port = int(sys.argv[2])
if sys.argv[1] == "busy":
    end = time.monotonic() + 6  # an engine build: silent, but using the CPU
    while time.monotonic() < end:
        sum(i * i for i in range(10000))
    print("READY", flush=True)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    http.server.HTTPServer(("0.0.0.0", port), H).serve_forever()
time.sleep(600)
'''


@pytest.mark.parametrize("mode", ["busy", "idle"])
def test_a_silent_start_is_hung_only_when_it_uses_no_cpu(tree: InstallTree, port: int, mode: str) -> None:
    (Path(tree.root) / "busy.py").write_text(BUSY)
    spec = ServerSpec(command=("python", "busy.py", mode, "{port}"), launcher="direct", port=port, ready_log="READY",
                      ready_timeout=60.0, silence_timeout=3.0)
    start_server(tree, spec)
    if mode == "busy":
        wait_ready(tree, spec, poll=0.3)
        return
    with pytest.raises(NotReady) as err:
        wait_ready(tree, spec, poll=0.3)
    assert "used no CPU time" in err.value.sentence()


def test_cli_start_runs_the_steps_before_the_server_and_rebuild_forces_them(
        prep_tree: InstallTree, gpu: Path, port: int) -> None:
    from cosyinstall import installed as inst
    from cosyinstall.artifact import ArtifactManifest
    from cosyinstall.cli import main
    from cosyinstall.server_stop import stop_server

    spec = ServerSpec(command=("python", "app.py", "good", "{port}"), launcher="direct", port=port, ready_log="READY",
                      prepare=(STEP,))
    os.makedirs(prep_tree.state, exist_ok=True)
    inst.write_manifest(prep_tree, "packages", ArtifactManifest("packages", "t", {}, (), {"server": spec.to_dict()}))
    argv = ["start", "--to", prep_tree.root, "--port", str(port)]
    assert main(argv) == 0 and _runs(prep_tree) == 1
    stop_server(prep_tree, grace=2.0)
    assert main(argv) == 0 and _runs(prep_tree) == 1
    stop_server(prep_tree, grace=2.0)
    assert main(argv + ["--rebuild"]) == 0 and _runs(prep_tree) == 2
