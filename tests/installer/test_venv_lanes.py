"""Side venvs (venv_lanes.py): what uv installs in a lane and is moved into the venv is exactly what
uv would have installed in the venv itself. Real uv, real CPython 3.10, wheels made here with a
console script, a `#!python` script, a header, a data file and a namespace package shared by two
wheels, the parts of a wheel that land outside site-packages or in a folder of two packages.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import NullReporter
from cosyinstall.venv import Uv
from cosyinstall.venv_lanes import Lanes, move_into
from support import find_python, make_wheel

PY310 = find_python("3.10")
pytestmark = pytest.mark.skipif(PY310 is None or shutil.which("uv") is None,
                                reason="needs CPython 3.10 (pyenv or uv) and uv on PATH")


def _wheels(dest: Path) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    tool = "alpha-1.0.data/"
    return [
        make_wheel(dest, "alpha", "1.0", payload="def main():\n    import sys\n    print(sys.prefix)\n", extra={
            "alpha-1.0.dist-info/entry_points.txt": "[console_scripts]\nalpha-run = alpha:main\n",
            tool + "scripts/alpha-tool": "#!python\nimport sys\nprint('tool', sys.prefix)\n",
            tool + "headers/alpha.h": "#define ALPHA 1\n",
            tool + "data/share/alpha/notes.txt": "notes\n",
        }),
        make_wheel(dest, "ns-one", "1.0", extra={"ns/one/__init__.py": "ONE = 1\n"}),
        make_wheel(dest, "ns-two", "2.0", extra={
            "ns/two/__init__.py": "TWO = 2\n",
            "ns_two-2.0.dist-info/entry_points.txt": "[console_scripts]\nns-two = ns_two:VERSION\n",
        }),
    ]


def _tree(root: Path) -> Dict[str, Tuple[str, bytes]]:
    """Every entry below root (uv's lock file aside): kind and mode, and bytes or link target."""
    found: Dict[str, Tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel == ".lock":
                continue
            st = path.lstat()
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link " + mode, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir " + mode, b"")
            else:
                found[rel] = ("file " + mode, path.read_bytes())
    return found


def _uv(tmp_path: Path) -> Uv:
    return Uv(shutil.which("uv") or "uv", str(tmp_path / "uv-cache"), NullReporter())


def _requirements(path: Path, lines: List[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_a_lane_merged_into_the_venv_equals_one_install_into_the_venv(tmp_path: Path) -> None:
    assert PY310 is not None
    found = tmp_path / "wheels"
    _wheels(found)
    uv = _uv(tmp_path)

    alone = tmp_path / "alone" / ".venv"  # the reference: every wheel installed into the venv itself
    uv.create_venv_at(PY310, str(alone))
    uv.install_batch(str(alone / "bin" / "python"), _requirements(tmp_path / "all.txt", ["alpha==1.0", "ns-one==1.0", "ns-two==2.0"]), str(found))

    venv = tmp_path / "gen" / ".venv"
    uv.create_venv_at(PY310, str(venv))
    lanes = Lanes(str(venv), str(tmp_path / "work"), lambda path: uv.create_venv_at(PY310, path))
    lanes.open(1)
    # At once, as in an apply: uv holds each venv's own lock, so neither run waits for the other.
    runs = [threading.Thread(target=uv.install_batch, args=(str(venv / "bin" / "python"),
                                                             _requirements(tmp_path / "a.txt", ["ns-one==1.0"]), str(found))),
            threading.Thread(target=uv.install_batch, args=(lanes.python(1),
                                                             _requirements(tmp_path / "b.txt", ["alpha==1.0", "ns-two==2.0"]), str(found)))]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert lanes.roots() == [lanes.path(1)]
    assert lanes.merge() > 0
    assert not os.path.exists(lanes.path(1)), "the lane was left behind"

    merged, reference = _tree(venv), _tree(alone)
    for part in ("bin/alpha-run", "bin/alpha-tool", "bin/ns-two", "share/alpha/notes.txt",
                 "lib/python3.10/site-packages/ns/one/__init__.py", "lib/python3.10/site-packages/ns/two/__init__.py"):
        assert part in reference, "the wheels made here no longer exercise %s" % part
    assert any(rel.startswith("include/") and rel.endswith("alpha.h") for rel in reference)
    differ = sorted(rel for rel in set(merged) | set(reference) if merged.get(rel) != reference.get(rel))
    assert differ == [], "the merged venv differs from one install: %s" % differ[:10]
    # The launchers find the venv's python relative to themselves, through any path to the venv.
    for script in ("alpha-run", "alpha-tool"):
        out = subprocess.run([str(venv / "bin" / script)], capture_output=True, text=True, check=True).stdout
        assert os.path.realpath(out.split()[-1]) == os.path.realpath(venv), out
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import ns.one, ns.two, alpha; print(ns.one.ONE + ns.two.TWO)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "3"
    listed = subprocess.run([shutil.which("uv") or "uv", "pip", "list", "--python", str(venv / "bin" / "python")],
                            capture_output=True, text=True, check=True).stdout
    assert all(name in listed for name in ("alpha", "ns-one", "ns-two"))


def test_merging_keeps_the_lanes_own_venv_files_out_and_replaces_a_file_both_hold(tmp_path: Path) -> None:
    src, dst = tmp_path / "lane", tmp_path / "venv"
    for root in (src, dst):
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "python").write_text(root.name)
        (root / "pyvenv.cfg").write_text(root.name)
    (src / "bin" / "tool").write_text("tool")
    (src / "lib" / "pkg").mkdir(parents=True)
    (src / "lib" / "pkg" / "a.py").write_text("a")
    (dst / "lib" / "shared").mkdir(parents=True)
    (dst / "lib" / "shared" / "x").write_text("old")
    (src / "lib" / "shared").mkdir()
    (src / "lib" / "shared" / "x").write_text("new")
    moved = move_into(str(src), str(dst), {"bin/python", "pyvenv.cfg"})
    assert moved == 3  # bin/tool, lib/pkg (whole), lib/shared/x
    assert (dst / "bin" / "python").read_text() == "venv" and (dst / "pyvenv.cfg").read_text() == "venv"
    assert (dst / "bin" / "tool").read_text() == "tool" and (dst / "lib" / "pkg" / "a.py").read_text() == "a"
    assert (dst / "lib" / "shared" / "x").read_text() == "new"
    assert (src / "bin" / "python").exists() and not (src / "lib" / "pkg").exists()


def test_a_path_that_is_a_file_in_the_venv_and_a_folder_in_the_lane_is_one_sentence(tmp_path: Path) -> None:
    src, dst = tmp_path / "lane", tmp_path / "venv"
    (src / "lib" / "clash").mkdir(parents=True)
    (src / "lib" / "clash" / "inner.py").write_text("x")
    (dst / "lib").mkdir(parents=True)
    (dst / "lib" / "clash").write_text("a module file of another package")
    with pytest.raises(ArtifactRejected, match="clash is a file in the venv but a folder in a package"):
        move_into(str(src), str(dst), set())
    assert (dst / "lib" / "clash").read_text() == "a module file of another package"  # nothing replaced
