"""`cosybuild upload DIST ssh://USER@HOST:PORT/DIR`: send a dist folder to the box and check it there.

Owns the I/O of the upload: one OpenSSH ControlMaster connection (the user authenticates once,
with whatever their ssh setup does), a probe of the box, rsync or sftp per file (resuming a
shorter copy), SHA256SUMS last, then `sha256sum -c` on the box. Decisions live in uploadplan.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Dict, List, Optional

from cosybuild.uploadplan import (
    Action,
    BoxState,
    LocalFile,
    Target,
    check_command,
    choose_transport,
    next_command,
    parse_check,
    parse_probe,
    parse_target,
    plan_actions,
    probe_command,
    sums_lines,
)
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.progress import Reporter, Task, human_bytes
from cosyinstall.sums import SUMS_NAME, read_sums

__all__ = ["SshOptions", "UploadResult", "read_dist", "upload"]


@dataclass
class SshOptions:
    """Passed through to every ssh, rsync and sftp call; cosybuild stores no credentials."""

    identity: Optional[str] = None
    config: Optional[str] = None
    options: List[str] = field(default_factory=list)


@dataclass
class UploadResult:
    target: Target
    transport: str
    actions: List[Action]
    next_command: str

    def lines(self) -> List[str]:
        tail = ["next, on the box (%s):" % self.target.ssh_command(), "  " + self.next_command]
        if self.transport == "check":
            return ["every file on %s matches SHA256SUMS" % self.target.where()] + tail
        count = {kind: [a for a in self.actions if a.kind == kind] for kind in ("send", "resume", "skip")}
        sent = sum(a.size - a.offset for a in self.actions if a.kind != "skip")
        return [
            "uploaded to %s by %s: %d sent, %d resumed, %d already there (%s transferred); every file checked on arrival"
            % (self.target.where(), self.transport, len(count["send"]), len(count["resume"]), len(count["skip"]), human_bytes(sent)),
        ] + tail


def read_dist(dist: Path) -> List[LocalFile]:
    """The files SHA256SUMS lists (full or delta bundle alike), smallest first, each present at its size."""
    if not dist.is_dir():
        raise ArtifactRejected("%s is not a folder" % dist, "give the folder cosybuild pack wrote")
    files = []
    for name, entry in read_sums(str(dist)).items():
        try:
            size = (dist / name).stat().st_size
        except FileNotFoundError:
            raise ArtifactRejected("%s lists %s, which is not in %s" % (SUMS_NAME, name, dist), "pack again") from None
        if entry.size is not None and entry.size != size:
            raise ArtifactRejected("%s is %d bytes but %s says %d" % (dist / name, size, SUMS_NAME, entry.size), "pack again")
        files.append(LocalFile(name, size, entry.sha256))
    files.sort(key=lambda f: (f.size, f.name))
    return files


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    return lines[-1] if lines else "no message"


class _Link:
    """One ControlMaster connection; every later ssh, rsync and sftp call rides on it."""

    def __init__(self, target: Target, opts: SshOptions) -> None:
        self.target = target
        self.ssh = shutil.which("ssh") or ""
        if not self.ssh:
            raise EnvironmentUnsuitable("ssh (OpenSSH's client) is not installed on this machine")
        # A short private folder: a unix socket path must stay under ~100 bytes.
        self.dir = tempfile.mkdtemp(prefix="cosyup-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.socket = os.path.join(self.dir, "ctl")
        self.common: List[str] = []
        if opts.config:
            self.common += ["-F", opts.config]
        if opts.identity:
            self.common += ["-i", opts.identity]
        for option in opts.options:
            self.common += ["-o", option]
        if target.port:
            self.common += ["-o", "Port=%d" % target.port]
        self.common += ["-o", "ControlPath=" + self.socket]

    def open(self) -> None:
        argv = [self.ssh, *self.common, "-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-f", "-N", self.target.destination]
        # A file, not a pipe: the backgrounded master keeps its stderr open for its whole life.
        with tempfile.TemporaryFile(mode="w+") as err:
            code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=err).returncode
            err.seek(0)
            message = err.read()
        if code != 0:
            raise EnvironmentUnsuitable("cannot reach %s port %s over ssh (%s)"
                                        % (self.target.host, self.target.port or 22, _last_line(message)),
                                        "check the address, the port and your key or password")

    def close(self) -> None:
        subprocess.run([self.ssh, *self.common, "-O", "exit", self.target.destination],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def ssh_argv(self) -> List[str]:
        return [self.ssh, *self.common, "-o", "ControlMaster=no"]

    def run(self, command: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh_argv(), "-T", self.target.destination, command],
                              input=stdin, capture_output=True, text=True)


def _remote_name(target: Target, name: str) -> str:
    """The path rsync and sftp take: relative to the login folder when DIR starts with ~/."""
    path = target.path.rstrip("/") + "/" + name
    return path[2:] if path.startswith("~/") else path


_PROGRESS = re.compile(r"^\s*([\d,]+)\s+\d+%")


def _pump(stream: IO[bytes], task: Task, start: int) -> None:
    """Turns rsync's --info=progress2 counters into task progress (bounded by what this file adds)."""
    seen = 0
    buffer = b""
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            return
        buffer += chunk
        parts = re.split(rb"[\r\n]", buffer)
        buffer = parts.pop()
        for part in parts:
            match = _PROGRESS.match(part.decode("utf-8", "replace"))
            if match:
                now = max(int(match.group(1).replace(",", "")) - start, 0)
                if now > seen:
                    task.advance(now - seen)
                    seen = now


def _rsync(link: _Link, dist: Path, action: Action, limit: Optional[int], err: IO[bytes]) -> subprocess.Popen:
    shell = " ".join(shlex.quote(a) for a in link.ssh_argv())
    argv = [shutil.which("rsync") or "rsync", "--partial", "--info=progress2", "-e", shell]
    # Resume appends after the bytes already there and re-checks the whole file; a fresh send
    # ignores size and time, since only the hash decided that the box's copy is wrong.
    argv.append("--append-verify" if action.kind == "resume" else "--ignore-times")
    if limit:
        argv.append("--bwlimit=%d" % limit)
    argv += [str(dist / action.name), "%s:%s" % (link.target.destination, _remote_name(link.target, action.name))]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)


def _sftp(link: _Link, dist: Path, action: Action, limit: Optional[int], live: bool, err: IO[bytes]) -> subprocess.Popen:
    def quoted(path: str) -> str:
        return '"%s"' % path.replace("\\", "\\\\").replace('"', '\\"')

    verb = "reput" if action.kind == "resume" else "put"
    batch = os.path.join(link.dir, "batch")
    with open(batch, "w", encoding="utf-8") as handle:
        if live:
            handle.write("progress\n")  # batch mode hides sftp's meter; on a terminal we want it
        handle.write("%s %s %s\n" % (verb, quoted(str(dist / action.name)), quoted(_remote_name(link.target, action.name))))
    sftp = shutil.which("sftp")
    if not sftp:
        raise EnvironmentUnsuitable("sftp (OpenSSH's client) is not installed on this machine")
    argv = [sftp, *link.common, "-o", "ControlMaster=no", "-b", batch]
    if limit:
        argv += ["-l", str(limit * 8)]  # sftp counts Kbit/s
    argv.append(link.target.destination)
    return subprocess.Popen(argv, stdout=None if live else subprocess.DEVNULL, stderr=err)


def _send(link: _Link, dist: Path, action: Action, transport: str, limit: Optional[int], reporter: Reporter, task: Task) -> None:
    before = task.done
    # stderr into a file: it cannot fill a pipe while we read progress from stdout.
    with tempfile.TemporaryFile() as err:
        if transport == "rsync":
            proc = _rsync(link, dist, action, limit, err)
            assert proc.stdout is not None
            _pump(proc.stdout, task, action.offset if action.kind == "resume" else 0)
        else:
            proc = _sftp(link, dist, action, limit, reporter.live and not reporter.quiet, err)
        code = proc.wait()
        err.seek(0)
        message = err.read().decode("utf-8", "replace")
    if code != 0:
        raise EnvironmentUnsuitable("the upload of %s to %s stopped (%s: %s)"
                                    % (action.name, link.target.where(), transport, _last_line(message)),
                                    "run the same command again: it resumes where it stopped")
    rest = action.size - action.offset - (task.done - before)
    if rest > 0:
        task.advance(rest)


def _checked(link: _Link, command: str, stdin: str = "") -> dict:
    proc = link.run(command, stdin)
    failed = parse_check(proc.stdout)
    if proc.returncode != 0 and not failed:
        raise EnvironmentUnsuitable("checking the upload on %s failed (%s)" % (link.target.where(), _last_line(proc.stderr)))
    return failed


def _reject(target: Target, failed: Dict[str, str]) -> ArtifactRejected:
    name = sorted(failed)[0]
    more = " (and %d more)" % (len(failed) - 1) if len(failed) > 1 else ""
    state = "is missing, though listed in" if failed[name] == "missing" else "does not match"
    return ArtifactRejected("%s on %s %s SHA256SUMS%s" % (name, target.where(), state, more),
                            "run the same upload again: it sends that file again")


def upload(dist: Path, url: str, opts: SshOptions, transport: str = "auto", reporter: Optional[Reporter] = None,
           limit: Optional[int] = None, check_only: bool = False) -> UploadResult:
    """Upload every file DIST's SHA256SUMS lists, then SHA256SUMS, then check them all on the box.

    `limit` caps the rate in KiB/s; `check_only` sends nothing and checks what the box holds.
    Raises ArtifactRejected (exit 3) naming a file that is not on the box as packed.
    """
    reporter = reporter or Reporter(stream=sys.stderr)
    target = parse_target(url)
    files = read_dist(dist)
    link = _Link(target, opts)
    try:
        link.open()
        probe = link.run(probe_command(target, [f.name for f in files]))
        if probe.returncode != 0:
            raise EnvironmentUnsuitable("cannot use the folder %s (%s)" % (target.where(), _last_line(probe.stderr)),
                                        "check that it can be created and written by %s" % (target.user or "your user"))
        state: BoxState = parse_probe(probe.stdout)
        chosen = choose_transport(transport, shutil.which("rsync") is not None, state, target)
        if check_only:
            failed = _checked(link, check_command(target, state, "-"), sums_lines(files))
            if failed:
                raise _reject(target, failed)
            return UploadResult(target, "check", [Action(f.name, f.size, "skip") for f in files], next_command(target))
        whole = [f for f in files if f.name != SUMS_NAME and state.sizes.get(f.name) == f.size]
        verified = set()
        if whole:
            failed = _checked(link, check_command(target, state, "-"), sums_lines(whole))
            verified = {f.name for f in whole if f.name not in failed}
        actions = plan_actions(files, state.sizes, verified)
        todo = [a for a in actions if a.kind != "skip"]
        total = sum(a.size - a.offset for a in todo)
        reporter.info("%s: %d to send, %d to resume, %d already there; %s by %s"
                      % (target.where(), sum(a.kind == "send" for a in todo), sum(a.kind == "resume" for a in todo),
                         len(actions) - len(todo), human_bytes(total), chosen))
        if todo:
            with reporter.task("upload to %s" % target.host, total) as task:
                for action in todo:
                    if action.kind == "resume":
                        reporter.info("resuming %s from %s" % (action.name, human_bytes(action.offset)))
                    _send(link, dist, action, chosen, limit, reporter, task)
        # Last, so that the box never lists a file that has not arrived whole.
        sums = Action(SUMS_NAME, (dist / SUMS_NAME).stat().st_size, "send")
        _send(link, dist, sums, chosen, None, reporter, reporter.task(SUMS_NAME, sums.size))
        failed = _checked(link, check_command(target, state))
        if failed:
            raise _reject(target, failed)
        return UploadResult(target, chosen, actions, next_command(target))
    finally:
        link.close()
