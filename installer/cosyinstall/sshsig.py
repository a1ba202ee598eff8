"""OpenSSH signatures (`ssh-keygen -Y sign`) read and checked with the standard library alone.

The box may lack ssh-keygen, so this module parses the armored SSHSIG format (OpenSSH's
PROTOCOL.sshsig) and OpenSSH public key lines, and verifies the two key types a user's own
key is likely to be:

- Ed25519 (RFC 8032) with Python integers and hashlib.sha512. The public key is decoded as
  RFC 8032 5.1.3 says (a y >= p or an x = 0 with the sign bit set is refused), S must be
  below the group order L, and the check is the cofactorless one OpenSSH's reference code
  makes: [S]B - [h]A is encoded and compared byte for byte with the signature's R.
- RSA with rsa-sha2-256 / rsa-sha2-512 (PKCS#1 v1.5: the whole encoded block is rebuilt and
  compared), moduli of 1024 bits or more as OpenSSH requires; SHA-1 `ssh-rsa` is refused.

ECDSA and security-key (sk-*) signatures are refused with a sentence naming the key type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

__all__ = ["SshsigError", "BadSignature", "PublicKey", "Sshsig", "parse_public_key", "parse_armored", "verify", "fingerprint",
           "signed_data"]

MAGIC = b"SSHSIG"
VERSION = 1
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
RSA_MIN_BITS = 1024


class SshsigError(ValueError):
    """A signature or key that cannot be read or does not verify; the message is one sentence part."""


class BadSignature(SshsigError):
    """A well-formed signature that does not verify: the data or the signature was changed."""


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key: its type name and wire blob (what a fingerprint is made of)."""

    kind: str
    blob: bytes
    comment: str = ""

    def line(self) -> str:
        return "%s %s" % (self.kind, base64.b64encode(self.blob).decode("ascii"))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


@dataclass(frozen=True)
class Sshsig:
    """One parsed SSHSIG blob."""

    key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes  # the SSH signature blob: string sig-type, string sig-bytes


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


# -- SSH wire format ------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise SshsigError("%s is truncated" % self.what)
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            raise SshsigError("%s holds a name that is not UTF-8" % self.what) from None

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise SshsigError("%s holds a negative number" % self.what)
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self.at != len(self.data):
            raise SshsigError("%s has trailing bytes" % self.what)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def parse_public_key(line: str) -> PublicKey:
    """An OpenSSH public key line (`ssh-ed25519 AAAA... comment`), options not allowed."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise SshsigError("is not an OpenSSH public key line (type, base64 key, comment)")
    kind, encoded = parts[0], parts[1]
    try:
        blob = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SshsigError("has a key that is not base64") from None
    reader = _Reader(blob, "the public key")
    inner = reader.text()
    if inner != kind:
        raise SshsigError("says %s but its key is %s" % (kind, inner))
    return PublicKey(kind, blob, parts[2] if len(parts) > 2 else "")


def parse_armored(text: str) -> Sshsig:
    """The armored output of `ssh-keygen -Y sign`."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise SshsigError("is not an armored SSH signature (%s ... %s)" % (_BEGIN, _END))
    try:
        blob = base64.b64decode("".join(lines[1:-1]).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SshsigError("holds a signature that is not base64") from None
    reader = _Reader(blob, "the signature")
    if reader.take(6) != MAGIC:
        raise SshsigError("does not start with SSHSIG")
    version = reader.uint32()
    if version != VERSION:
        raise SshsigError("has SSHSIG version %d, not %d" % (version, VERSION))
    key_blob = reader.string()
    namespace = reader.text()
    reader.string()  # reserved
    hash_algorithm = reader.text()
    signature = reader.string()
    reader.end()
    kind = _Reader(key_blob, "the signature's public key").text()
    return Sshsig(PublicKey(kind, key_blob), namespace, hash_algorithm, signature)


def signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    """What the key actually signs: the preamble, namespace, hash name and H(message)."""
    digest = _HASHES[hash_algorithm](message).digest()
    return (MAGIC + _string(namespace.encode("utf-8")) + _string(b"") + _string(hash_algorithm.encode("ascii"))
            + _string(digest))


def verify(sig: Sshsig, message: bytes, namespace: str) -> None:
    """Raise SshsigError unless `sig` is a valid signature of `message` under `namespace` by sig.key."""
    if sig.namespace != namespace:
        raise SshsigError("was made for namespace %r, not %r" % (sig.namespace, namespace))
    if sig.hash_algorithm not in _HASHES:
        raise SshsigError("uses hash %r; only sha256 and sha512 are accepted" % sig.hash_algorithm)
    data = signed_data(namespace, sig.hash_algorithm, message)
    reader = _Reader(sig.signature, "the signature blob")
    sig_type = reader.text()
    raw = reader.string()
    reader.end()
    key = _Reader(sig.key.blob, "the public key")
    kind = key.text()
    if kind == "ssh-ed25519":
        if sig_type != "ssh-ed25519":
            raise SshsigError("is a %s signature for an ssh-ed25519 key" % sig_type)
        point = key.string()
        key.end()
        if not ed25519_verify(point, data, raw):
            raise BadSignature("does not match the signed data")
    elif kind == "ssh-rsa":
        e = key.mpint()
        n = key.mpint()
        key.end()
        if sig_type not in ("rsa-sha2-256", "rsa-sha2-512"):
            raise SshsigError("uses %s; only rsa-sha2-256 and rsa-sha2-512 are accepted for RSA keys" % sig_type)
        if n.bit_length() < RSA_MIN_BITS:
            raise SshsigError("is by an RSA key of %d bits; at least %d are needed" % (n.bit_length(), RSA_MIN_BITS))
        if not rsa_pkcs1_verify(e, n, raw, data, sig_type[-3:]):
            raise BadSignature("does not match the signed data")
    else:
        raise SshsigError("is by a %s key, which this verifier does not check (ssh-ed25519 and ssh-rsa are "
                          "supported; install ssh-keygen on the box for others)" % kind)


# -- Ed25519 (RFC 8032) ---------------------------------------------------------------------

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = Tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


def _add(a: _Point, b: _Point) -> _Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(scalar: int, point: _Point) -> _Point:
    result: _Point = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _encode(point: _Point) -> bytes:
    x, y, z, _t = point
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(raw: bytes) -> Optional[_Point]:
    """RFC 8032 5.1.3; None for an encoding that is not a point."""
    if len(raw) != 32:
        return None
    value = int.from_bytes(raw, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx == (-u) % _P:
        x = x * _SQRT_M1 % _P
    elif vxx != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


_BY = 4 * pow(5, _P - 2, _P) % _P
_BASE = _decode(_BY.to_bytes(32, "little"))
assert _BASE is not None


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decode(public)
    if a is None:
        return False
    r_raw, s = signature[:32], int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(r_raw + public + message).digest(), "little") % _L
    neg_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    assert _BASE is not None
    return _encode(_add(_mul(s, _BASE), _mul(h, neg_a))) == r_raw


# -- RSA PKCS#1 v1.5 -----------------------------------------------------------------------

_DIGEST_INFO = {
    "256": (bytes.fromhex("3031300d060960864801650304020105000420"), hashlib.sha256),
    "512": (bytes.fromhex("3051300d060960864801650304020305000440"), hashlib.sha512),
}


def rsa_pkcs1_verify(e: int, n: int, signature: bytes, message: bytes, bits: str) -> bool:
    k = (n.bit_length() + 7) // 8
    if len(signature) > k or e < 3 or e % 2 == 0:
        return False
    s = int.from_bytes(signature, "big")  # a shorter signature is left-padded, as OpenSSH allows
    if s >= n:
        return False
    prefix, hasher = _DIGEST_INFO[bits]
    t = prefix + hasher(message).digest()
    if k < len(t) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return pow(s, e, n).to_bytes(k, "big") == expected


def parse_key_lines(text: str) -> List[PublicKey]:
    """Every key of an allowed-keys text: one OpenSSH public key line each; blank and # lines skipped."""
    keys = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keys.append(parse_public_key(line))
    return keys
