"""The build stamp of a pack: a sequence that only goes up per manifest name, and the build id.

The sequence is kept per user in `$COSYBUILD_STATE/sequences.json` (default
`$XDG_STATE_HOME/cosybuild`, else `~/.local/state/cosybuild`), so deleting the dist folder
does not restart it. It goes up by one whenever the build's inputs change (the manifest
file's bytes and the lock file's bytes); packing the same inputs again keeps the sequence
and so the build id, which keeps packing deterministic (byte-identical artifacts).
`--sequence N` sets it (never below the recorded one): use it on another workstation, or
after changing a local app or model folder, which the lock does not pin.

The build id is derived from name, sequence and inputs, so two different builds never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cosyinstall.buildstamp import BuildStamp
from cosyinstall.errors import UsageError
from cosyinstall.journal import write_atomic

__all__ = ["state_file", "next_stamp", "remember"]


def state_file() -> Path:
    explicit = os.environ.get("COSYBUILD_STATE")
    if explicit:
        return Path(explicit) / "sequences.json"
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "cosybuild" / "sequences.json"


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError("%s cannot be read (%s)" % (path, exc), "fix or remove it and pass --sequence N") from None
    return data if isinstance(data, dict) else {}


def _inputs_digest(manifest: Path, lock: Path) -> str:
    digest = hashlib.sha256()
    for path in (manifest, lock):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def next_stamp(name: str, manifest: Path, lock: Path, sequence: int | None = None) -> BuildStamp:
    """The stamp of this pack (not yet remembered: `remember` it once the pack succeeded)."""
    path = state_file()
    known = _load(path).get(name)
    known = known if isinstance(known, dict) else {}
    recorded = known.get("sequence")
    last = recorded if isinstance(recorded, int) else 0
    inputs = _inputs_digest(manifest, lock)
    if sequence is not None:
        if sequence < 1:
            raise UsageError("--sequence must be 1 or more, not %d" % sequence)
        if sequence < last:
            raise UsageError("--sequence %d is below %d, the last build of %s recorded in %s" % (sequence, last, name, path),
                             "a box that installed build %d would refuse it as a downgrade" % last)
        chosen = sequence
    elif last and known.get("inputs") == inputs:
        chosen = last
    else:
        chosen = last + 1
    build_id = hashlib.sha256(("%s\0%d\0%s" % (name, chosen, inputs)).encode("utf-8")).hexdigest()[:32]
    return BuildStamp(name, chosen, build_id)


def remember(stamp: BuildStamp, manifest: Path, lock: Path) -> None:
    path = state_file()
    data = _load(path)
    data[stamp.name] = {"sequence": stamp.sequence, "inputs": _inputs_digest(manifest, lock), "build-id": stamp.build_id}
    write_atomic(str(path), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))
