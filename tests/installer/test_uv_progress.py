"""Issue 14, point 5: progress while uv installs (packages done of total, elapsed), the full uv command
lines only with --verbose and in the install log, and -q printing only errors."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from cosyinstall.progress import Reporter
from cosyinstall.tree import InstallTree
from cosyinstall.uvprogress import InstallProgress, count_requirements
from support import offline, pyz, run


def test_counting_counts_new_dist_info_folders(tmp_path: Path) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    site = Path(tree.venv_lib) / "python3.10" / "site-packages"
    site.mkdir(parents=True)
    (site / "old-1.0.dist-info").mkdir()
    req = tmp_path / "requirements.txt"
    req.write_text("# header\na==1 --hash=sha256:00\nb==2 --hash=sha256:11\nc==3 --hash=sha256:22\n")
    assert count_requirements(str(req)) == 3
    out = io.StringIO()
    reporter = Reporter(stream=out, live=False, line_interval=0.0)
    with InstallProgress(tree, 3, reporter, interval=0.05):
        for name in ("a-1", "b-2"):
            (site / (name + ".dist-info")).mkdir()
            time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert "installing packages: 1 of 3" in "\n".join(lines) and lines[-1].startswith("installing packages: 2 of 3, ")


def _apply(dist: Path, to: Path, *extra: str):
    return run(offline(" ".join(pyz(dist, "apply", "--no-start", "--from", str(dist), "--to", str(to), *extra))))


def test_apply_shows_package_progress_and_hides_uv_command_lines(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    proc = _apply(dist, to)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installing packages: 3 of 3, " in proc.stderr
    assert "pip install" not in proc.stderr and "--require-hashes" not in proc.stderr
    log = (to / ".cosyinstall" / "install.log").read_text(encoding="utf-8")
    assert "installing packages: " in log and "pip install --python" in log


def test_verbose_shows_the_command_lines(dist: Path, tmp_path: Path) -> None:
    proc = _apply(dist, tmp_path / "to", "--verbose")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pip install --python" in proc.stderr and "venv --quiet --relocatable --python" in proc.stderr


def test_quiet_prints_nothing_on_success_even_with_warnings(dist: Path, tmp_path: Path) -> None:
    os.unlink(dist / "SHA256SUMS")  # a warning row: a truncated upload cannot be told apart
    proc = _apply(dist, tmp_path / "to", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    (tmp_path / "a-file").write_text("")
    failed = _apply(dist, tmp_path / "a-file", "-q")
    assert failed.returncode == 4 and failed.stderr.startswith("cosyinstall: error: ")
