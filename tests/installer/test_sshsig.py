"""The built-in SSHSIG verifier against real OpenSSH: keys and signatures made by ssh-keygen.

Every signature is checked by both verifiers (ssh-keygen -Y verify and the pure-Python one)
and they must agree: good ones pass in both, tampered ones fail in both.
"""

from __future__ import annotations

import base64
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

from cosyinstall.artifact import SIG_NAMESPACE
from cosyinstall.bundle_signature import VERIFIER_ENV, check_signature, choose_verifier
from cosyinstall.sshsig import (BadSignature, SshsigError, ed25519_verify, parse_armored, parse_public_key,
                                signed_data, verify)
from cosyinstall.trust_policy import ArtifactFacts, SignatureVerdict, decide
from cosyinstall.buildstamp import BuildStamp

NS = SIG_NAMESPACE


def _keygen(tmp: Path, kind: str, *extra: str) -> Path:
    key = tmp / ("key-" + kind + "-".join(extra))
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test", "-f", str(key), *extra], check=True)
    return key


def _sign(key: Path, data: bytes, namespace: str = NS) -> str:
    done = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", namespace], input=data,
                          capture_output=True, check=True)
    return done.stdout.decode()


def _both(monkeypatch: pytest.MonkeyPatch, message: bytes, sig: str, pub: Path) -> tuple:
    keys = [parse_public_key(pub.read_text())]
    out = []
    for verifier in ("ssh-keygen", "builtin"):
        monkeypatch.setenv(VERIFIER_ENV, verifier)
        verdict = check_signature(message, sig, keys)
        out.append(verdict.problem is None)
    return tuple(out)


def _armor(blob: bytes) -> str:
    text = base64.b64encode(blob).decode()
    return "-----BEGIN SSH SIGNATURE-----\n%s\n-----END SSH SIGNATURE-----\n" % "\n".join(
        text[i:i + 70] for i in range(0, len(text), 70))


def _tamper_signature_bytes(sig: str, rng: random.Random) -> str:
    """Flip one bit inside the raw signature (the last string of the SSHSIG blob)."""
    lines = sig.strip().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    # The raw signature bytes are the blob's tail (64 for Ed25519, 256 for RSA-2048).
    pos = len(blob) - 1 - rng.randrange(64)
    blob[pos] ^= 1 << rng.randrange(8)
    return _armor(bytes(blob))


def test_rfc8032_vectors() -> None:
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
                        "1cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert ed25519_verify(pk, b"", sig)
    assert not ed25519_verify(pk, b"\x00", sig)
    pk2 = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
    sig2 = bytes.fromhex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613"
                         "d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
    assert ed25519_verify(pk2, b"\x72", sig2)
    # S + L is the same scalar mod L: OpenSSH's reference code reduces it, RFC 8032 (and we) refuse it.
    s = int.from_bytes(sig2[32:], "little") + 2 ** 252 + 27742317777372353535851937790883648493
    assert not ed25519_verify(pk2, b"\x72", sig2[:32] + s.to_bytes(32, "little"))
    # A public key whose y is not below p is not a canonical encoding.
    bad = (2 ** 255 - 19 + 1).to_bytes(32, "little")
    assert not ed25519_verify(bad, b"\x72", sig2)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_builtin_agrees_with_ssh_keygen_on_many_messages(kind: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    key = _keygen(tmp_path, kind, *(["-b", "2048"] if kind == "rsa" else []))
    pub = key.with_name(key.name + ".pub")
    rng = random.Random(kind)
    for i in range(12):
        message = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        sig = _sign(key, message)
        assert _both(monkeypatch, message, sig, pub) == (True, True), i
        assert _both(monkeypatch, message + b"\n", sig, pub) == (False, False), i
        assert _both(monkeypatch, message, _tamper_signature_bytes(sig, rng), pub) == (False, False), i


def test_rsa_sha2_256_and_sha256_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rsa-sha2-256 (which ssh-keygen does not emit for -Y sign) made with openssl, checked by both."""
    key = _keygen(tmp_path, "rsa", "-b", "2048", "-m", "PEM")
    pub = key.with_name(key.name + ".pub")
    public = parse_public_key(pub.read_text())
    message = b"a SHA256SUMS\n"
    for hash_name in ("sha256", "sha512"):
        data = signed_data(NS, hash_name, message)
        raw = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=data, capture_output=True,
                             check=True).stdout

        def s(b: bytes) -> bytes:
            return struct.pack(">I", len(b)) + b

        blob = (b"SSHSIG" + struct.pack(">I", 1) + s(public.blob) + s(NS.encode()) + s(b"") + s(hash_name.encode())
                + s(s(b"rsa-sha2-256") + s(raw)))
        assert _both(monkeypatch, message, _armor(blob), pub) == (True, True), hash_name
        assert _both(monkeypatch, b"another\n", _armor(blob), pub) == (False, False), hash_name


def test_namespace_other_key_and_unsupported_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ed = _keygen(tmp_path, "ed25519")
    other = _keygen(tmp_path, "rsa", "-b", "2048")
    trusted = [parse_public_key(ed.with_name(ed.name + ".pub").read_text())]
    message = b"x\n"
    for verifier in ("ssh-keygen", "builtin"):
        monkeypatch.setenv(VERIFIER_ENV, verifier)
        assert "namespace 'file'" in (check_signature(message, _sign(ed, message, "file"), trusted).problem or "")
        assert "does not trust" in (check_signature(message, _sign(other, message), trusted).problem or "")
        assert "not an armored" in (check_signature(message, "garbage", trusted).problem or "")
    ecdsa = _keygen(tmp_path, "ecdsa")
    ec_keys = [parse_public_key(ecdsa.with_name(ecdsa.name + ".pub").read_text())]
    sig = _sign(ecdsa, message)
    monkeypatch.setenv(VERIFIER_ENV, "ssh-keygen")
    assert check_signature(message, sig, ec_keys).problem is None
    monkeypatch.setenv(VERIFIER_ENV, "builtin")
    problem = check_signature(message, sig, ec_keys).problem or ""
    assert "ecdsa-sha2-nistp256" in problem and "ssh-keygen" in problem
    with pytest.raises(BadSignature):
        verify(parse_armored(_sign(ed, message)), b"y\n", NS)
    with pytest.raises(SshsigError):
        parse_public_key("ssh-ed25519 not-base64!")


def test_without_ssh_keygen_on_path_the_builtin_verifier_is_used(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = _keygen(tmp_path, "ed25519")
    sig = _sign(key, b"m")
    keys = [parse_public_key(key.with_name(key.name + ".pub").read_text())]
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv(VERIFIER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    assert choose_verifier() is None
    verdict = check_signature(b"m", sig, keys)
    assert verdict.problem is None and verdict.verifier == "the built-in verifier"
    monkeypatch.setenv("PATH", os.defpath + os.pathsep + "/usr/bin")
    assert check_signature(b"m", sig, keys).verifier == "ssh-keygen"


def test_policy_decisions() -> None:
    stamp = BuildStamp("demo", 5, "a" * 32)
    good = SignatureVerdict(True, None, "SHA256:x", "ssh-keygen")
    art = [ArtifactFacts("offline_packages.zip", True, "a" * 32, "demo")]

    def run(**kw):
        args = dict(trusted=1, sums="S", sig="S.sig", verdict=good, stamp=stamp, artifacts=art,
                    installed_sequence=None, allow_downgrade=False)
        args.update(kw)
        return decide(**args)

    assert run() is None
    assert run(trusted=0, verdict=SignatureVerdict(False)) is None
    assert "unsigned" in run(verdict=SignatureVerdict(False))
    assert "no build stamp" in run(stamp=None)
    assert "changed after signing" in run(artifacts=[ArtifactFacts("m.zip", False, "a" * 32, "demo")])
    assert "two builds" in run(artifacts=[ArtifactFacts("m.zip", True, "b" * 32, "demo")])
    assert "no build id" in run(artifacts=[ArtifactFacts("m.zip", True, None, None)])
    assert "downgrade" in run(installed_sequence=6)
    assert run(installed_sequence=6, allow_downgrade=True) is None
    assert run(installed_sequence=5) is None
