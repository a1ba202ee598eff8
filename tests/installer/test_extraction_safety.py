"""Issue 12 points 4, 5, 7 on the demo bundle: explicit modes, links never followed, power-cut ordering.

Real parts only: the demo bundle packed by cosybuild, the real pyz, real uv, and Debian's strace
recording the system calls of a whole apply.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import Dict, List, Tuple

from support import apply_argv, pyz, run


def _outside(tmp_path: Path, name: str, files: Dict[str, bytes]) -> Path:
    """A folder elsewhere on the machine, which a planted link points to."""
    folder = tmp_path / "elsewhere" / name
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
        (folder / rel).chmod(0o600)
    return folder


def _listing(root: Path) -> Dict[str, Tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.lstat().st_mode)) for p in root.rglob("*") if p.is_file()}


def test_links_in_the_tree_are_reported_and_never_followed(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    voice = to / "pretrained_models" / "demo-voice"
    speakers = to / "asset" / "speakers"
    # Same names, other bytes: a hash through the links would see a difference, a chmod or a
    # delete through them would change the other disk.
    elsewhere_voice = _outside(tmp_path, "voice", {p.name: b"not the weights" for p in voice.iterdir()})
    elsewhere_speakers = _outside(tmp_path, "speakers", {p.name: b"{}" for p in speakers.iterdir()} | {"keep.txt": b"x"})
    shutil.rmtree(voice)
    voice.symlink_to(elsewhere_voice)
    shutil.rmtree(speakers)
    speakers.symlink_to(elsewhere_speakers)
    (to / "server.py").unlink()
    (to / "server.py").symlink_to(elsewhere_speakers / "keep.txt")
    before = _listing(tmp_path / "elsewhere")

    proc = run(pyz(dist, "verify", "--to", str(to)))
    assert proc.returncode == 3, proc.stderr
    assert "%s is a symbolic link where the bundle has a folder" % voice in proc.stderr
    assert "%s is a symbolic link where the bundle has a folder" % speakers in proc.stderr
    assert "%s is a symbolic link where the bundle has a file" % (to / "server.py") in proc.stderr

    repair = run(apply_argv(dist, to))
    assert repair.returncode == 0, repair.stderr
    assert _listing(tmp_path / "elsewhere") == before  # nothing outside --to was written, chmodded or deleted
    for path in (voice, speakers, to / "server.py"):
        assert not path.is_symlink()
    ok = run(pyz(dist, "verify", "--to", str(to)))
    assert ok.returncode == 0, ok.stderr


def test_a_link_planted_at_the_journals_temporary_name_is_not_written_through(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (to / ".cosyinstall" / "state.json.tmp").symlink_to(victim)
    shutil.rmtree(to / "pretrained_models")  # so that apply has work to do and writes the journal
    assert run(apply_argv(dist, to)).returncode == 0
    assert victim.read_text() == "precious\n"


def test_modes_are_explicit_under_umask_000_and_a_deleted_venv_is_rebuilt(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    argv = apply_argv(dist, to)
    argv[-1] = "umask 000 && " + argv[-1]
    proc = run(argv)
    assert proc.returncode == 0, proc.stderr
    writable = []
    for path in [to, *to.rglob("*")]:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
            writable.append("%s %o" % (path, stat.S_IMODE(st.st_mode)))
    assert writable == []
    assert stat.S_IMODE((to / "server.py").stat().st_mode) == 0o644
    shutil.rmtree(to / ".venv")
    again = run(apply_argv(dist, to))
    assert again.returncode == 0, again.stderr
    assert "venv" in again.stdout and (to / ".venv" / "bin" / "python").exists()


_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
_FD_PATH = re.compile(r"^\d+<(.*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _events(trace: str) -> List[Tuple[str, List[str]]]:
    """(syscall, paths) in the order the calls returned successfully."""
    pending: Dict[str, Tuple[str, str]] = {}
    events: List[Tuple[str, List[str]]] = []
    for line in trace.splitlines():
        resumed = _RESUMED.match(line)
        if resumed:
            pid, name, rest = resumed.groups()
            call, args = pending.pop(pid, (name, ""))
            text = args + rest
        else:
            match = _CALL.match(line)
            if not match:
                continue
            pid, call, text = match.groups()
            if text.endswith("<unfinished ...>"):
                pending[pid] = (call, text[: -len("<unfinished ...>")])
                continue
        if not re.search(r"\)\s+=\s+0\b", text):
            continue
        if call in ("fsync", "fdatasync"):
            found = _FD_PATH.match(text)
            if found:
                events.append(("fsync", [found.group(1)]))
        elif call.startswith("rename"):
            events.append(("rename", _QUOTED.findall(text)[:2]))
    return events


def test_power_cut_ordering_file_fsync_rename_dir_fsync_then_done(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    trace = tmp_path / "trace.txt"
    argv = apply_argv(dist, to)
    argv[-1] = argv[-1].replace("exec ", "exec strace -f -qq -y -s 4096 -e trace=fsync,fdatasync,rename,renameat,"
                                "renameat2 -o %s " % trace, 1)
    proc = run(argv)
    assert proc.returncode == 0, proc.stderr
    events = _events(trace.read_text())
    # The files are committed into the new generation's real folder, <to> then switched to it.
    root = to.resolve()
    journal = str(root / ".cosygen" / "state.json")
    committed = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                 and not str(p.relative_to(root)).startswith((".venv", ".cosyinstall", ".cosygen"))]
    # Files the model steps make in place (unpacked resource.zip) are not renamed from staging.
    renamed_to = {e[1][1]: i for i, e in enumerate(events) if e[0] == "rename" and len(e[1]) == 2}
    checked = 0
    for path in committed:
        target = str(path)
        if target not in renamed_to:
            continue
        at = renamed_to[target]
        source = events[at][1][0]
        assert any(e == ("fsync", [source]) for e in events[:at]), "%s renamed before it was fsynced" % target
        dir_sync = [i for i, e in enumerate(events) if i > at and e == ("fsync", [os.path.dirname(target)])]
        assert dir_sync, "%s: its folder was not fsynced after the rename" % target
        done = [i for i, e in enumerate(events) if i > dir_sync[0] and e[0] == "rename" and e[1][1:] == [journal]]
        assert done, "%s: no journal write after its folder's fsync" % target
        tmp = events[done[0]][1][0]
        assert ("fsync", [tmp]) in events[dir_sync[0]:done[0]], "the journal was renamed before it was fsynced"
        assert ("fsync", [os.path.dirname(journal)]) in events[done[0]:], "the journal's rename was not made durable"
        checked += 1
    # server.py, README.md, the speaker file, config.json and voice.bin at least.
    assert checked >= 5, (checked, [str(p) for p in committed])
    # The switch comes last: the link renamed over <to> after the journal's last write, then made durable.
    switch = [i for i, e in enumerate(events) if e[0] == "rename" and e[1][1:] == [str(to)]]
    last_done = max(i for i, e in enumerate(events) if e[0] == "rename" and e[1][1:] == [journal])
    assert switch and switch[-1] > last_done, "the generation was switched before its journal was written"
    assert ("fsync", [str(to.parent)]) in events[switch[-1]:], "the switch was not made durable"
