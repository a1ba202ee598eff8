"""Check SHA256SUMS.sig against the trusted keys and turn the trust decision into a preflight row.

The signature is checked over the exact bytes of SHA256SUMS read once here; the build stamp
and the sha256 of each artifact are taken from those same bytes, and each artifact's hash as
the upload check computed it must equal the signed one.

Verifier: `ssh-keygen -Y verify` (an allowed-signers file made from the trusted keys) when the
box has ssh-keygen, since it is OpenSSH's own code and knows every key type; otherwise the
built-in verifier (sshsig.py: Ed25519 and RSA in pure Python). COSYINSTALL_SIG_VERIFIER=builtin
or =ssh-keygen forces one. Either way the signature is first parsed here, so a wrong namespace
or an untrusted key is reported as such.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import List, Optional

from cosyinstall.artifact import KIND_OF, SIG_NAME, SIG_NAMESPACE, SUMS_NAME
from cosyinstall.buildstamp import BuildStamp, parse_stamp
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.preflight import Finding
from cosyinstall.sshsig import BadSignature, PublicKey, SshsigError, parse_armored, verify
from cosyinstall.sums import parse_sums
from cosyinstall.tree import InstallTree
from cosyinstall.trust import installed_sequence, trusted_keys
from cosyinstall.trust_policy import ArtifactFacts, SignatureVerdict, decide

__all__ = ["VERIFIER_ENV", "Gate", "check_signature", "signature_gate", "choose_verifier"]

VERIFIER_ENV = "COSYINSTALL_SIG_VERIFIER"
_PRINCIPAL = "cosy-offline"
_CHANGED = "does not verify over %s: the file or its signature was changed after signing" % SUMS_NAME
_MAX_TEXT = 16 * 1024 * 1024  # SHA256SUMS and its signature are a few lines; anything this big is not one


@dataclass
class Gate:
    """The signature row for the preflight table (None: nothing to say) and the accepted build stamp."""

    finding: Optional[Finding]
    stamp: Optional[BuildStamp]


def choose_verifier() -> Optional[str]:
    """The ssh-keygen to use, or None for the built-in verifier."""
    choice = os.environ.get(VERIFIER_ENV, "auto")
    if choice == "builtin":
        return None
    found = shutil.which("ssh-keygen")
    if choice == "ssh-keygen" and found is None:
        raise EnvironmentUnsuitable("%s=ssh-keygen but ssh-keygen is not on PATH" % VERIFIER_ENV)
    return found


def _ssh_keygen_verify(ssh_keygen: str, message: bytes, sig_text: str, key: PublicKey, namespace: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="cosyinstall-sig-") as work:
        allowed = os.path.join(work, "allowed_signers")
        with open(allowed, "w", encoding="utf-8") as handle:
            handle.write('%s namespaces="%s" %s\n' % (_PRINCIPAL, namespace, key.line()))
        sig_path = os.path.join(work, "sig")
        with open(sig_path, "w", encoding="utf-8") as handle:
            handle.write(sig_text)
        done = subprocess.run([ssh_keygen, "-Y", "verify", "-f", allowed, "-I", _PRINCIPAL, "-n", namespace,
                               "-s", sig_path], input=message, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return done.returncode == 0


def check_signature(message: bytes, sig_text: str, trusted: List[PublicKey],
                    namespace: str = SIG_NAMESPACE) -> SignatureVerdict:
    """Whether `sig_text` is a signature of `message` by one of `trusted` under `namespace`."""
    try:
        sig = parse_armored(sig_text)
    except SshsigError as exc:
        return SignatureVerdict(True, "%s" % exc)
    if sig.namespace != namespace:
        return SignatureVerdict(True, "was made for namespace %r, not %r: it is not a bundle signature"
                                % (sig.namespace, namespace))
    key = next((k for k in trusted if k.blob == sig.key.blob), None)
    if key is None:
        return SignatureVerdict(True, "is signed by %s key %s, which this box does not trust"
                                % (sig.key.kind, sig.key.fingerprint))
    ssh_keygen = choose_verifier()
    if ssh_keygen is not None:
        if not _ssh_keygen_verify(ssh_keygen, message, sig_text, key, namespace):
            return SignatureVerdict(True, _CHANGED, verifier="ssh-keygen")
        return SignatureVerdict(True, None, key.fingerprint, "ssh-keygen")
    try:
        verify(sig, message, namespace)
    except BadSignature:
        return SignatureVerdict(True, _CHANGED, verifier="the built-in verifier")
    except SshsigError as exc:
        return SignatureVerdict(True, str(exc), verifier="the built-in verifier")
    return SignatureVerdict(True, None, key.fingerprint, "the built-in verifier")


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_TEXT + 1)
    except FileNotFoundError:
        return None
    if len(raw) > _MAX_TEXT:
        raise ArtifactRejected("%s is larger than %d bytes, which no such file is" % (path, _MAX_TEXT))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactRejected("%s is not a text file" % path) from None


def signature_gate(from_dir: str, tree: InstallTree, bundle: object, allow_downgrade: bool = False) -> Gate:
    """The trust decision for the uploads in `from_dir`, opened as `bundle` (an opened_bundle.Bundle)."""
    sums_path = os.path.join(from_dir, SUMS_NAME)
    sig_path = os.path.join(from_dir, SIG_NAME)
    try:
        keys = trusted_keys(tree)
        if not keys:
            if os.path.isfile(sig_path):
                return Gate(Finding("signature", False, "%s is not checked: this box trusts no key yet" % sig_path,
                                    blocking=False, hint="cosyinstall trust KEYFILE.pub"), None)
            return Gate(None, None)
        sums_text = _read_text(sums_path)
        if sums_text is None:
            raise ArtifactRejected("%s is missing: this box trusts only signed bundles" % sums_path)
        sig_text = _read_text(sig_path)
        verdict = SignatureVerdict(False) if sig_text is None else check_signature(sums_text.encode("utf-8"),
                                                                                     sig_text, keys)
        stamp = parse_stamp(sums_text, sums_path) if verdict.present and verdict.problem is None else None
        signed = parse_sums(sums_text, sums_path)
        facts = []
        for name in KIND_OF:
            source = getattr(bundle, "packages" if KIND_OF[name] == "packages" else "models")
            if source is None:
                continue
            seen = getattr(bundle, "verified", {}).get(name) or {}
            entry = signed.get(name)
            manifest = source.manifest
            facts.append(ArtifactFacts(name, entry is not None and seen.get("sha256") == entry.sha256,
                                       manifest.build_id() if manifest is not None else None,
                                       manifest.name if manifest is not None else None))
        installed = installed_sequence(tree, stamp.name) if stamp is not None else None
        refusal = decide(len(keys), sums_path, sig_path, verdict, stamp, facts, installed, allow_downgrade)
    except ArtifactRejected as exc:
        return Gate(Finding("signature", False, exc.message, hint=exc.hint, code=ArtifactRejected.exit_code), None)
    if refusal is not None:
        return Gate(Finding("signature", False, refusal, code=ArtifactRejected.exit_code), None)
    assert stamp is not None
    return Gate(Finding("signature", True, "signed by trusted key %s (checked with %s); build %d of %s"
                        % (verdict.signer, verdict.verifier, stamp.sequence, stamp.name)), stamp)
