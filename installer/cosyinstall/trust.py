"""The box's trust state: the keys it trusts to sign bundles and the build installed per manifest.

`cosyinstall trust KEYFILE` adds an OpenSSH public key line to <to>/.cosyinstall/trusted_keys
(the user pastes it once, out of band). From then on apply asks for signed bundles
(trust_policy.py). After a successful apply the build stamp is recorded in builds.json, so a
later apply of an older build is a downgrade.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

from cosyinstall.buildstamp import BuildStamp
from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.journal import read_json_object, read_small, write_atomic
from cosyinstall.sshsig import PublicKey, SshsigError, parse_key_lines
from cosyinstall.tree import InstallTree

__all__ = ["trust_key", "trusted_keys", "installed_sequence", "record_installed", "CHECKED_HERE"]

# Key types the built-in verifier checks; others need ssh-keygen on the box.
CHECKED_HERE = ("ssh-ed25519", "ssh-rsa")


def _read_keys(text: str, where: str) -> List[PublicKey]:
    try:
        return parse_key_lines(text)
    except SshsigError as exc:
        raise ArtifactRejected("%s %s" % (where, exc), "run cosyinstall trust again with the .pub file") from None


def trusted_keys(tree: InstallTree) -> List[PublicKey]:
    """The trusted keys; a damaged file is refused rather than read as 'trust nothing'."""
    raw = read_small(tree.trusted_keys)
    if raw is None:
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactRejected("%s is not a text file" % tree.trusted_keys) from None
    return _read_keys(text, tree.trusted_keys)


def trust_key(tree: InstallTree, keyfile: str) -> Tuple[List[PublicKey], List[PublicKey]]:
    """Add the public key(s) of KEYFILE; returns (keys added, keys already trusted)."""
    try:
        with open(keyfile, encoding="utf-8") as handle:
            text = handle.read(1024 * 1024)
    except FileNotFoundError:
        raise UsageError("%s does not exist" % keyfile, "pass the signer's public key file (id_ed25519.pub)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("%s cannot be read as text (%s)" % (keyfile, exc)) from None
    if "PRIVATE KEY" in text:
        raise UsageError("%s is a private key; the box needs only the public key" % keyfile,
                         "pass the .pub file next to it")
    try:
        keys = parse_key_lines(text)
    except SshsigError as exc:
        raise UsageError("%s %s" % (keyfile, exc), "pass an OpenSSH public key line (ssh-ed25519 AAAA...)") from None
    if not keys:
        raise UsageError("%s holds no public key" % keyfile, "pass an OpenSSH public key line (ssh-ed25519 AAAA...)")
    known = trusted_keys(tree)
    blobs = {k.blob for k in known}
    added = [k for k in keys if k.blob not in blobs]
    if added:
        lines = [k.line() + (" " + k.comment if k.comment else "") for k in known + added]
        write_atomic(tree.trusted_keys, ("\n".join(lines) + "\n").encode("utf-8"))
    return added, [k for k in keys if k.blob in blobs]


def _builds(tree: InstallTree) -> Dict[str, Dict[str, object]]:
    data = read_json_object(tree.installed_builds) or {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def installed_sequence(tree: InstallTree, name: str) -> Optional[int]:
    seq = _builds(tree).get(name, {}).get("sequence")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def record_installed(tree: InstallTree, stamp: BuildStamp) -> None:
    """After a successful apply (or a rollback: the kept generation's stamp) of the build `stamp`."""
    builds = _builds(tree)
    builds[stamp.name] = {"sequence": stamp.sequence, "build-id": stamp.build_id}
    os.makedirs(tree.state, exist_ok=True)
    write_atomic(tree.installed_builds, (json.dumps(builds, indent=1, sort_keys=True) + "\n").encode("utf-8"))
