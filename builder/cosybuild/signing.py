"""`cosybuild pack --sign KEY`: sign SHA256SUMS with the user's own SSH key through OpenSSH.

`ssh-keygen -Y sign -f KEY -n cosy-offline-bundle@v1` reads SHA256SUMS on stdin and writes
the armored signature to SHA256SUMS.sig. KEY is a private key file, or a public key file
whose private key is loaded in ssh-agent; a passphrase is asked on the terminal by ssh-keygen.
The fixed namespace keeps a bundle signature from being usable as any other SSH signature.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cosyinstall.artifact import SIG_NAME, SIG_NAMESPACE
from cosyinstall.errors import EnvironmentUnsuitable, UsageError

__all__ = ["sign_sums", "drop_stale_signature"]


def sign_sums(sums: Path, key: str) -> Path:
    """Write SHA256SUMS.sig next to `sums`; the signature covers its exact bytes."""
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen is None:
        raise EnvironmentUnsuitable("--sign needs ssh-keygen (OpenSSH), which is not on PATH",
                                    "install OpenSSH's client tools")
    if not os.path.isfile(key):
        raise UsageError("--sign %s: no such key file" % key, "pass your SSH key, e.g. ~/.ssh/id_ed25519")
    out = sums.with_name(SIG_NAME)
    tmp = sums.with_name(SIG_NAME + ".tmp")
    with open(sums, "rb") as data, open(tmp, "wb") as sig:
        done = subprocess.run([ssh_keygen, "-Y", "sign", "-q", "-f", key, "-n", SIG_NAMESPACE], stdin=data, stdout=sig,
                              stderr=subprocess.PIPE)
    if done.returncode != 0 or tmp.stat().st_size == 0:
        tmp.unlink()
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise EnvironmentUnsuitable("ssh-keygen could not sign %s with %s: %s" % (sums, key, said[-1] if said else
                                                                                  "exit %d" % done.returncode))
    tmp.replace(out)
    return out


def drop_stale_signature(sums: Path) -> None:
    """An unsigned pack rewrites SHA256SUMS: an old signature beside it would only mislead."""
    try:
        sums.with_name(SIG_NAME).unlink()
    except FileNotFoundError:
        pass
