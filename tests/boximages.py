"""Box images for the tests: Debian root filesystems made with debootstrap, entered offline.

An AutoDL image is an old or new Ubuntu userland with whatever CPython it happens to ship.
The tests stand in for it with real Debian userlands built by `debootstrap --variant=minbase`
from the Debian mirror apt already uses on this machine (read from apt's sources at run time):

    bullseye   glibc 2.31, python3.9 only (the userland of Ubuntu 20.04 images)
    bookworm   glibc 2.36, python3.11 only (no 3.10)

Each image is built once and cached outside the repo, in
`$XDG_CACHE_HOME/cosy-offline/boxes/<suite>/` (default `~/.cache/...`): `rootfs/` holds the
tree and `stamp.json` is written only after a complete build, so an interrupted build is
redone; a lock file keeps two test processes from building the same image at once.

`Box` enters an image the way the installer meets a box: a throwaway overlay on the cached
tree (the cache is never written), chroot with /proc, /dev and loopback up, in new mount,
network and pid namespaces (`unshare -m -n -p`): zero network, and every process the test
started dies with the box. Host folders (the uploads, the install tree) are bind-mounted in.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["SUITES", "apt_mirror", "cache_root", "image", "Box", "missing_tools"]

# What each suite is chosen to stand for; the tests assert these facts of the built image.
SUITES: Dict[str, Dict[str, str]] = {
    "bullseye": {"glibc": "2.31", "python": "3.9"},
    "bookworm": {"glibc": "2.36", "python": "3.11"},
}
# minbase has coreutils, dpkg and apt; the installer needs only python3 on top (it unpacks
# with Python's zipfile/tarfile, never unzip or tar).
PACKAGES = ("python3",)
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_STAMP_VERSION = 1


def missing_tools() -> List[str]:
    """Host commands a box needs; empty when boxes can be built and entered here."""
    need = ["debootstrap", "unshare", "nsenter", "chroot", "mount", "ip"]
    missing = [n for n in need if shutil.which(n) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _apt_sources() -> List[Dict[str, List[str]]]:
    """apt's sources as {'uris': [...], 'suites': [...]}, from both the one-line and deb822 forms."""
    entries: List[Dict[str, List[str]]] = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append({"uris": [words[1]], "suites": [words[2]]})
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: Dict[str, List[str]] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
                entries.append({"uris": fields.get("uris", []), "suites": fields.get("suites", [])})
    return entries


def apt_mirror() -> Optional[str]:
    """The Debian archive apt uses here: a source serving a plain release suite (not -security)."""
    releases = {"bullseye", "bookworm", "trixie", "sid", "stable", "oldstable", "testing", "unstable"}
    for entry in _apt_sources():
        if any(s in releases for s in entry["suites"]):
            for uri in entry["uris"]:
                if uri.startswith(("http://", "https://", "file:/")):
                    return uri.rstrip("/")
    return None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cosy-offline" / "boxes"


def _du(path: Path) -> int:
    proc = subprocess.run(["du", "-sxb", str(path)], capture_output=True, text=True)
    return int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 0


def image(suite: str, log=None) -> Path:
    """The cached root filesystem of `suite`, built first when absent or incomplete.

    Returns the rootfs directory; `stamp.json` beside it records the build time and size.
    """
    if suite not in SUITES:
        raise ValueError("unknown suite %s" % suite)
    home = cache_root() / suite
    home.mkdir(parents=True, exist_ok=True)
    rootfs, stamp = home / "rootfs", home / "stamp.json"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stamp_ok(stamp):
            return rootfs
        mirror = apt_mirror()
        if not mirror:
            raise RuntimeError("no Debian mirror found in apt's sources on this machine")
        if rootfs.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)
        partial = home / "rootfs.partial"
        if partial.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=True)
        argv = ["debootstrap", "--variant=minbase", "--arch=amd64", "--include=" + ",".join(PACKAGES)]
        if os.path.exists(_KEYRING):
            argv.append("--keyring=" + _KEYRING)
        argv += [suite, str(partial), mirror]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError("debootstrap %s failed (exit %d):\n%s" % (suite, proc.returncode, tail))
        # apt's package lists and downloaded .debs are not part of a box; keep the cache small.
        for junk in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages"):
            for path in glob.glob(str(partial / junk)):
                os.unlink(path)
        seconds = time.monotonic() - started
        os.rename(partial, rootfs)
        info = {"version": _STAMP_VERSION, "suite": suite, "seconds": round(seconds, 1),
                "bytes": _du(rootfs), "packages": list(PACKAGES), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = home / "stamp.json.tmp"
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, stamp)
        if log:
            log("built %s in %.0f s, %d MB" % (suite, seconds, info["bytes"] // 1000000))
        return rootfs


def _stamp_ok(stamp: Path) -> bool:
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == _STAMP_VERSION and (stamp.parent / "rootfs" / "usr" / "bin" / "python3").exists()


def stamp(suite: str) -> dict:
    """What the build of `suite` recorded: seconds, bytes, build time."""
    return json.loads((cache_root() / suite / "stamp.json").read_text())


_HOLDER = r"""
set -e
root="$1"; shift
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/dev/shm"
while [ $# -gt 1 ]; do mkdir -p "$root$2"; mount --bind "$1" "$root$2"; shift 2; done
ip link set lo up
touch "$SCRATCH/ready"
exec sleep 1000000
"""

_BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Box:
    """One running box: an overlay of a cached image in its own mount, network and pid namespaces.

    Use as a context manager; `run` executes a command inside (chroot, no network), and leaving
    the block kills every process of the box and drops its mounts.
    """

    def __init__(self, suite: str, scratch: Path, binds: Optional[Dict[str, str]] = None) -> None:
        self.suite = suite
        self.lower = image(suite)
        self.scratch = Path(scratch)
        self.binds = dict(binds or {})
        self.root = self.scratch / "root"
        self.holder: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Box":
        for sub in ("upper", "work", "root"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)
        args: List[str] = []
        for host, inside in self.binds.items():
            Path(host).mkdir(parents=True, exist_ok=True)
            args += [str(host), inside]
        env = dict(os.environ, LOWER=str(self.lower), SCRATCH=str(self.scratch))
        self.holder = subprocess.Popen(
            ["unshare", "-m", "-n", "-p", "--fork", "--kill-child", "--propagation", "private",
             "sh", "-c", _HOLDER, "holder", str(self.root), *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (self.scratch / "ready").exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                err = self.holder.stderr.read() if self.holder.poll() is not None else "timed out"
                self.__exit__(None, None, None)
                raise RuntimeError("box %s did not start: %s" % (self.suite, err))
            time.sleep(0.05)
        return self

    def _ns_pid(self) -> int:
        """The pid of the box's `sleep` (pid 1 inside), whose namespaces `nsenter` joins."""
        assert self.holder is not None
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.holder.pid:
                return int(Path(stat).parent.name)
        raise RuntimeError("box %s has no process" % self.suite)

    def argv(self, command: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: str = "/") -> List[str]:
        """argv that runs `command` inside the box, as root with a plain environment."""
        base = {"PATH": _BOX_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        base.update(env or {})
        pid = str(self._ns_pid())
        return (["nsenter", "-t", pid, "-m", "-n", "-p", "--", "chroot", str(self.root),
                 "/usr/bin/env", "-i", "-C", cwd] + ["%s=%s" % kv for kv in sorted(base.items())] + list(command))

    def run(self, command: Sequence[str], timeout: float = 600, env: Optional[Dict[str, str]] = None,
            cwd: str = "/") -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command, env, cwd), capture_output=True, text=True, timeout=timeout)

    def path(self, inside: str) -> Path:
        """A path of the box as seen from the host, through the overlay's upper layer or the image.

        Only for reading what the box left behind that is not in a bind mount; bind-mounted
        folders are read at their host path.
        """
        rel = inside.lstrip("/")
        upper = self.scratch / "upper" / rel
        return upper if os.path.lexists(upper) else self.lower / rel

    def __exit__(self, *exc) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()  # unshare's child is pid 1 of the box: its death kills the rest
            try:
                self.holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self.holder is not None and self.holder.stderr:
            self.holder.stderr.close()
