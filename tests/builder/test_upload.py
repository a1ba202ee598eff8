"""`cosybuild upload` against a real OpenSSH server (Debian's sshd on a loopback port, throwaway keys)."""

from __future__ import annotations

import filecmp
import hashlib
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosybuild.uploadplan import (
    BoxState,
    LocalFile,
    Target,
    choose_transport,
    next_command,
    parse_check,
    parse_target,
    plan_actions,
)
from cosyinstall.errors import EnvironmentUnsuitable, UsageError
from cosyinstall.sums import format_sums
from sshbox import CountingRelay, SshBox, start_sshd, stop_sshd
from support import REPO, cosybuild, free_port, one_sentence

MB = 1 << 20


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def make_dist(folder: Path, sizes: dict[str, int]) -> Path:
    """A dist folder of random files and the SHA256SUMS cosyinstall.sums writes, streamed in 1 MiB blocks."""
    folder.mkdir(parents=True)
    items = []
    for name, size in sizes.items():
        digest = hashlib.sha256()
        with open(folder / name, "wb") as handle:
            left = size
            while left:
                block = os.urandom(min(left, MB))
                digest.update(block)
                handle.write(block)
                left -= len(block)
        items.append((name, digest.hexdigest(), size))
    (folder / "SHA256SUMS").write_text(format_sums(items))
    return folder


def upload(box: SshBox, dist: Path, folder: Path, *extra: str, port: int | None = None) -> subprocess.CompletedProcess:
    return cosybuild("upload", str(dist), box.url(folder, port), *box.args(), *extra)


def same_files(dist: Path, folder: Path) -> None:
    for path in dist.iterdir():
        assert filecmp.cmp(path, folder / path.name, shallow=False), path.name


def test_full_upload_of_the_demo_then_again_sends_nothing(box: SshBox, demo_dist: Path, tmp_path: Path) -> None:
    folder = tmp_path / "autodl-tmp"
    proc = upload(box, demo_dist, folder)
    assert proc.returncode == 0, proc.stderr
    same_files(demo_dist, folder)
    assert "by rsync" in proc.stdout
    assert "%d sent" % (len(list(demo_dist.iterdir())) - 1) in proc.stdout
    # The exact next command, and it runs there.
    command = "python3 %s/cosyinstall.pyz apply --from %s" % (folder, folder)
    assert proc.stdout.splitlines()[-1].strip() == command
    assert "ssh -p %d %s@127.0.0.1" % (box.port, box.user) in proc.stdout
    assert subprocess.run(["python3", str(folder / "cosyinstall.pyz"), "--version"], capture_output=True).returncode == 0

    again = upload(box, demo_dist, folder)
    assert again.returncode == 0, again.stderr
    assert "0 sent, 0 resumed, %d already there (0 B transferred)" % (len(list(demo_dist.iterdir())) - 1) in again.stdout


def test_sftp_transport_uploads_everything(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"offline_packages.zip": 3 * MB + 17, "cosyinstall.pyz": 4000, "pretrained_models.zip": 1})
    folder = tmp_path / "box"
    proc = upload(box, dist, folder, "--transport", "sftp")
    assert proc.returncode == 0, proc.stderr
    assert "by sftp: 3 sent" in proc.stdout
    same_files(dist, folder)
    # Not a terminal: progress comes as plain lines, no carriage returns.
    assert "\r" not in proc.stderr and "upload to 127.0.0.1  3.0 MB / 3.0 MB (100%)" in proc.stderr


def test_progress_bar_on_a_terminal(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"offline_packages.zip": 2 * MB})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cosybuild", "upload", str(dist), box.url(tmp_path / "box"), *box.args()],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out, _ = proc.communicate(timeout=120)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal is closed once the upload has exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.returncode == 0, screen
    assert b"\r\x1b[Kupload to 127.0.0.1  2.0 MB / 2.0 MB (100%)" in screen


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


@pytest.mark.parametrize("transport", ["rsync", "sftp"])
def test_interrupted_upload_resumes_without_resending(box: SshBox, tmp_path: Path, transport: str) -> None:
    size = 64 * MB
    dist = make_dist(tmp_path / "dist", {"offline_packages.zip": size, "cosyinstall.pyz": 5000})
    folder = tmp_path / "box"
    relay = CountingRelay(box.port)  # counts every byte the client puts on the wire
    try:
        argv = [sys.executable, "-m", "cosybuild", "upload", str(dist), box.url(folder, relay.port), *box.args(),
                "--transport", transport, "--limit", "8192"]
        first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def partial() -> int:
            # rsync writes into a hidden temporary beside the target, sftp into the target itself.
            sizes = [p.stat().st_size for p in folder.glob("*offline_packages.zip*")] if folder.is_dir() else []
            return max(sizes, default=0) >= 16 * MB

        _wait_for(partial, 60, "16 MB to arrive")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        kept = _wait_for(lambda: (folder / "offline_packages.zip").is_file() and (folder / "offline_packages.zip").stat().st_size,
                         20, "the partial file")
        assert 16 * MB <= kept < size
        assert not (folder / "SHA256SUMS").exists(), "SHA256SUMS must arrive last"

        relay.reset()
        second = upload(box, dist, folder, "--transport", transport, port=relay.port)
        assert second.returncode == 0, second.stderr
        assert "1 resumed" in second.stdout
        same_files(dist, folder)
        # What was already there crossed the wire once: the resume sends the rest plus ssh's overhead.
        assert relay.sent < size - kept + 2 * MB, (relay.sent, kept)
    finally:
        relay.close()


def test_damaged_upload_is_caught_on_arrival(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"offline_packages.zip": 2 * MB, "pretrained_models.zip": MB, "cosyinstall.pyz": 3000})
    # One byte changed after packing: what reaches the box is not what SHA256SUMS promises.
    with open(dist / "pretrained_models.zip", "r+b") as handle:
        handle.seek(1234)
        byte = handle.read(1)
        handle.seek(1234)
        handle.write(bytes([byte[0] ^ 0xFF]))
    proc = upload(box, dist, tmp_path / "box")
    assert proc.returncode == 3, proc.stderr
    sentence = one_sentence(proc.stderr)
    assert "pretrained_models.zip" in sentence and "does not match SHA256SUMS" in sentence and "127.0.0.1" in sentence


def test_byte_flipped_on_the_box_is_caught_and_only_that_file_resent(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"offline_packages.zip": 2 * MB, "pretrained_models.zip": MB, "cosyinstall.pyz": 3000})
    folder = tmp_path / "box"
    assert upload(box, dist, folder).returncode == 0
    with open(folder / "offline_packages.zip", "r+b") as handle:
        handle.seek(MB)
        byte = handle.read(1)
        handle.seek(MB)
        handle.write(bytes([byte[0] ^ 0x01]))

    check = upload(box, dist, folder, "--check-only")
    assert check.returncode == 3, check.stderr
    sentence = one_sentence(check.stderr)
    assert "offline_packages.zip" in sentence and "does not match SHA256SUMS" in sentence

    again = upload(box, dist, folder)
    assert again.returncode == 0, again.stderr
    assert "1 sent, 0 resumed, 2 already there" in again.stdout
    same_files(dist, folder)


def test_box_without_rsync_or_sha256sum_gets_sftp_and_python_check(tmp_path: Path) -> None:
    # The box's PATH holds only what the upload needs besides rsync and sha256sum.
    bin_dir = tmp_path / "boxbin"
    bin_dir.mkdir()
    for tool in ("mkdir", "wc"):
        found = subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))  # the interpreter itself, not a shim
    server = start_sshd(tmp_path / "sshd", set_env_path=str(bin_dir))
    try:
        dist = make_dist(tmp_path / "dist", {"offline_packages.zip": MB, "cosyinstall.pyz": 3000})
        folder = tmp_path / "box"
        proc = upload(server, dist, folder)
        assert proc.returncode == 0, proc.stderr
        assert "by sftp" in proc.stdout
        same_files(dist, folder)
        with open(folder / "cosyinstall.pyz", "r+b") as handle:
            handle.write(b"X")
        check = upload(server, dist, folder, "--check-only")
        assert check.returncode == 3 and "cosyinstall.pyz" in one_sentence(check.stderr), check.stderr
    finally:
        stop_sshd(server)


def test_unreachable_host_is_exit_4_naming_host_and_port(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"cosyinstall.pyz": 100})
    port = free_port()
    proc = upload(box, dist, tmp_path / "box", port=port)
    assert proc.returncode == 4, proc.stderr
    sentence = one_sentence(proc.stderr)
    assert "127.0.0.1 port %d" % port in sentence


def test_missing_local_file_is_exit_3_naming_it(box: SshBox, tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", {"cosyinstall.pyz": 100, "offline_packages.zip": 10})
    (dist / "offline_packages.zip").unlink()
    proc = upload(box, dist, tmp_path / "box")
    assert proc.returncode == 3 and "offline_packages.zip" in one_sentence(proc.stderr)


# -- the pure planning ------------------------------------------------------------------------

def test_parse_target() -> None:
    assert parse_target("ssh://root@region-1.autodl.com:12345/root/autodl-tmp") == \
        Target("root", "region-1.autodl.com", 12345, "/root/autodl-tmp")
    assert parse_target("ssh://box") == Target(None, "box", None, "/root/autodl-tmp")
    assert parse_target("ssh://u@box/~/up/").path == "~/up"
    for bad in ("root@box:/x", "ssh://root@box:99999/x", "http://box/x"):
        with pytest.raises(UsageError):
            parse_target(bad)


def test_next_command_quotes_and_keeps_home_expandable() -> None:
    assert next_command(Target("root", "h", 1, "/root/my dir")) == \
        "python3 '/root/my dir/cosyinstall.pyz' apply --from '/root/my dir'"
    assert next_command(Target("root", "h", 1, "~/up")) == "python3 ~/up/cosyinstall.pyz apply --from ~/up"


def test_plan_skips_verified_resumes_shorter_resends_the_rest() -> None:
    files = [LocalFile(n, 100, "0" * 64) for n in ("a", "b", "c", "d", "e", "SHA256SUMS")]
    sizes = {"a": 100, "b": 40, "c": 100, "d": 150}
    kinds = {a.name: (a.kind, a.offset) for a in plan_actions(files, sizes, verified={"a"})}
    assert kinds == {"a": ("skip", 0), "b": ("resume", 40), "c": ("send", 0), "d": ("send", 0), "e": ("send", 0)}


def test_choose_transport_and_parse_check() -> None:
    target = Target("root", "box", 22, "/x")
    with_rsync = BoxState(tools={"rsync": "/usr/bin/rsync"})
    assert choose_transport("auto", True, with_rsync, target) == "rsync"
    assert choose_transport("auto", False, with_rsync, target) == "sftp"
    assert choose_transport("auto", True, BoxState(), target) == "sftp"
    with pytest.raises(EnvironmentUnsuitable, match="box"):
        choose_transport("rsync", True, BoxState(), target)
    assert parse_check("a.zip: OK\nb.zip: FAILED\nc.zip: FAILED open or read\n") == {"b.zip": "differs", "c.zip": "missing"}
