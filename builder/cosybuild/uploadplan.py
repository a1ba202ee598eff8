"""Pure decisions of `cosybuild upload`: the target URL, what the box reports, what to send.

No I/O here: `upload.py` runs ssh, rsync and sftp and feeds their output to these functions.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set
from urllib.parse import unquote, urlsplit

from cosyinstall.errors import EnvironmentUnsuitable, UsageError
from cosyinstall.artifact import PYZ_NAME
from cosyinstall.sums import SUMS_NAME

__all__ = [
    "DEFAULT_DIR",
    "Target",
    "LocalFile",
    "BoxState",
    "Action",
    "parse_target",
    "probe_command",
    "parse_probe",
    "choose_transport",
    "check_command",
    "parse_check",
    "sums_lines",
    "plan_actions",
    "next_command",
]

DEFAULT_DIR = "/root/autodl-tmp"
TRANSPORTS = ("auto", "rsync", "sftp")


@dataclass(frozen=True)
class Target:
    """Where the upload goes: ssh://USER@HOST:PORT/DIR."""

    user: Optional[str]
    host: str
    port: Optional[int]
    path: str

    @property
    def destination(self) -> str:
        return "%s@%s" % (self.user, self.host) if self.user else self.host

    def where(self) -> str:
        """host, port and folder, as an error sentence names them."""
        return "%s port %s:%s" % (self.host, self.port or 22, self.path)

    def ssh_command(self) -> str:
        port = " -p %d" % self.port if self.port else ""
        return "ssh%s %s" % (port, self.destination)

    def shell_path(self, name: str = "") -> str:
        """The folder (or a file in it) quoted for the remote shell; a leading ~/ stays expandable."""
        path = self.path.rstrip("/") + "/" + name if name else self.path
        if path == "~":
            return "~"
        if path.startswith("~/"):
            return "~/" + shlex.quote(path[2:])
        return shlex.quote(path)


@dataclass(frozen=True)
class LocalFile:
    name: str
    size: int
    sha256: str


@dataclass
class BoxState:
    """What one probe of the box found: its tools and the size of each upload already there."""

    tools: Dict[str, str] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """One file's fate: `skip` (already on the box, hash checked), `resume` from `offset`, or `send`."""

    name: str
    size: int
    kind: str
    offset: int = 0


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise UsageError("%s is not an ssh://USER@HOST:PORT/DIR address" % url,
                         "AutoDL's `ssh -p 12345 root@region.autodl.com` becomes ssh://root@region.autodl.com:12345/root/autodl-tmp")
    try:
        port = parts.port
    except ValueError:
        raise UsageError("%s has a port that is not a number from 1 to 65535" % url) from None
    path = unquote(parts.path) or DEFAULT_DIR
    if path.startswith("/~"):
        path = path[1:]
    if path != "/":
        path = path.rstrip("/")
    return Target(unquote(parts.username) if parts.username else None, parts.hostname, port, path)


_TOOLS = ("rsync", "sha256sum", "python3")


def probe_command(target: Target, names: Iterable[str]) -> str:
    """One remote shell line: make the folder, report the tools, then `size<TAB>name` per upload there."""
    folder = target.shell_path()
    lines = ["mkdir -p %s || exit 3" % folder, "cd %s || exit 3" % folder]
    for tool in _TOOLS:
        lines.append("p=$(command -v %s) && printf 'tool\\t%s\\t%%s\\n' \"$p\"" % (tool, tool))
    quoted = " ".join(shlex.quote(n) for n in names)
    if quoted:
        lines.append("for f in %s; do [ -f \"$f\" ] && printf 'size\\t%%s\\t%%s\\n' \"$(wc -c < \"$f\")\" \"$f\"; done" % quoted)
    lines.append("exit 0")
    return "; ".join(lines)


def parse_probe(text: str) -> BoxState:
    state = BoxState()
    for line in text.splitlines():
        fields = line.split("\t", 2)
        if len(fields) != 3:
            continue
        kind, first, second = fields
        if kind == "tool":
            state.tools[first] = second
        elif kind == "size" and first.strip().isdigit():
            state.sizes[second] = int(first.strip())
    return state


def choose_transport(requested: str, local_rsync: bool, state: BoxState, target: Target) -> str:
    if requested not in TRANSPORTS:
        raise UsageError("--transport %s is not one of %s" % (requested, ", ".join(TRANSPORTS)))
    both = local_rsync and "rsync" in state.tools
    if requested == "rsync" and not both:
        where = "this machine" if not local_rsync else target.host
        raise EnvironmentUnsuitable("rsync is not installed on %s" % where, "install it or use --transport sftp")
    if requested == "auto":
        return "rsync" if both else "sftp"
    return requested


# Mirrors `sha256sum -c` (same output lines) for a box that has python3 but not coreutils' sha256sum.
_PY_CHECK = r"""
import hashlib, re, sys
src = open(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else sys.stdin
bad = 0
for line in src:
    m = re.match(r"^([0-9a-fA-F]{64}) [ *](.+)$", line.rstrip("\n"))
    if not m:
        continue
    name = m.group(2)
    h = hashlib.sha256()
    try:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        print("%s: FAILED open or read" % name); bad = 1; continue
    if h.hexdigest() == m.group(1).lower():
        print("%s: OK" % name)
    else:
        print("%s: FAILED" % name); bad = 1
sys.exit(bad)
"""


def check_command(target: Target, state: BoxState, sums: str = SUMS_NAME) -> str:
    """The remote line that checks uploads against `sums` (a file in the folder, or `-` for stdin)."""
    arg = "-" if sums == "-" else shlex.quote(sums)
    if "sha256sum" in state.tools:
        tool = "sha256sum -c %s" % arg
    elif "python3" in state.tools:
        tool = "python3 -c %s %s" % (shlex.quote(_PY_CHECK), arg)
    else:
        raise EnvironmentUnsuitable("%s has neither sha256sum nor python3 to check the upload" % target.host,
                                    "install coreutils or python3 there")
    return "cd %s && %s" % (target.shell_path(), tool)


_FAILED = re.compile(r"^(.+): FAILED( open or read)?$")


def parse_check(text: str) -> Dict[str, str]:
    """name -> `differs` or `missing`, for every line the checker reported as failed."""
    failed: Dict[str, str] = {}
    for line in text.splitlines():
        match = _FAILED.match(line.strip())
        if match:
            failed[match.group(1)] = "missing" if match.group(2) else "differs"
    return failed


def sums_lines(files: Iterable[LocalFile]) -> str:
    return "".join("%s  %s\n" % (f.sha256, f.name) for f in files)


def plan_actions(files: List[LocalFile], sizes: Dict[str, int], verified: Set[str]) -> List[Action]:
    """Per file: skip what the box holds whole (`verified` by hash), resume a shorter copy, send the rest.

    SHA256SUMS is always sent, and last, so the box never lists a file that has not arrived.
    """
    actions = []
    for item in files:
        if item.name == SUMS_NAME:
            continue
        there = sizes.get(item.name)
        if there == item.size and item.name in verified:
            actions.append(Action(item.name, item.size, "skip"))
        elif there is not None and 0 < there < item.size:
            actions.append(Action(item.name, item.size, "resume", there))
        else:
            actions.append(Action(item.name, item.size, "send"))
    return actions


def next_command(target: Target) -> str:
    """What the user runs on the box after the upload."""
    return "python3 %s apply --from %s" % (target.shell_path(PYZ_NAME), target.shell_path())
