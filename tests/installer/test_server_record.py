"""The pid record on its own: it round-trips, bad files read as none, and a pid that is not ours is never taken for ours."""

from __future__ import annotations

import os
import signal

from serverprocs import alive, record_of, spawn_session

from cosyinstall.server_record import is_ours, leftover_session, members, read_record, remove_record, write_record
from cosyinstall.server_stop import stop_server
from cosyinstall.tree import InstallTree


def test_record_round_trips_and_is_removed_only_for_its_pid(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    os.makedirs(tree.state)
    assert read_record(tree) is None
    record = {"pid": 4242, "pgid": 4242, "sid": 4242, "port": 6008, "argv": ["mpirun", "python"], "ready": None}
    write_record(tree, record)
    assert read_record(tree) == record
    assert os.listdir(tree.state) == ["server.pid"], "the temporary file of the atomic write was left behind"
    remove_record(tree, pid=4343)
    assert read_record(tree) == record, "a record of another start must survive"
    remove_record(tree, pid=4242)
    assert not os.path.exists(tree.server_pid)
    remove_record(tree)  # nothing there: no error


def test_unreadable_records_read_as_none(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    os.makedirs(tree.state)
    for text in ("{not json", "[4242]", '{"pid": "4242"}', '{"pid": 1}', '{"pid": 0}', ""):
        with open(tree.server_pid, "w") as fh:
            fh.write(text)
        assert read_record(tree) is None, text


def test_a_recycled_pid_is_not_ours_and_is_never_signalled(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    # A live process that merely has the recorded pid: its start time differs from the record's.
    other = spawn_session(tree, "exec sleep 60", track=False)
    try:
        record = record_of(tree, other, starttime=record_of(tree, other)["starttime"] + 1)
        assert is_ours(record) is False
        assert leftover_session(record) is None
        assert members(record) == []
        assert stop_server(tree, grace=1.0) is False
        assert alive(other.pid), "stop signalled a process that was not ours"
        assert read_record(tree) is None, "the stale record is cleared"
        # The same process with its true start time is ours.
        assert is_ours(record_of(tree, other)) is True
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()


def test_a_record_naming_this_process_or_its_session_is_not_ours(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    os.makedirs(tree.state)
    me = os.getpid()
    own = {"pid": me, "pgid": os.getpgid(0) + 100000, "sid": os.getsid(0), "starttime": None}
    write_record(tree, own)
    assert is_ours(own) is False
    assert leftover_session(own) is None, "our own session is never a leftover to sweep"
    assert members(own) == []
    assert stop_server(tree, grace=0.5) is False
