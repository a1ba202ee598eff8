"""The trust decision for a bundle, pure: given what was found, accept or give the refusal sentence.

Once the box trusts a key (`cosyinstall trust`), a bundle is installed only when: SHA256SUMS
is signed (SHA256SUMS.sig), by a trusted key under the bundle namespace, over SHA256SUMS's
exact bytes; every artifact's sha256 matches that signed SHA256SUMS; every artifact carries
the build id of the signed stamp; and the build sequence is not below the one installed for
that manifest name (unless downgrades are allowed). Without a trusted key nothing is asked.

A rollback to a kept generation is not a downgrade: the generations code does not call
`decide` for it; it records the kept generation's stamp with `trust.record_installed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from cosyinstall.buildstamp import BuildStamp

__all__ = ["SignatureVerdict", "ArtifactFacts", "decide"]


@dataclass(frozen=True)
class SignatureVerdict:
    """What checking SHA256SUMS.sig found: absent, refused (`problem`, a sentence part) or good (`signer`)."""

    present: bool
    problem: Optional[str] = None
    signer: str = ""        # the signing key's fingerprint when good
    verifier: str = ""      # "ssh-keygen" or "the built-in verifier"


@dataclass(frozen=True)
class ArtifactFacts:
    """One artifact of the upload as the trust decision sees it."""

    name: str                      # offline_packages.zip
    covered: bool                  # its sha256 was checked against the signed SHA256SUMS and matched
    build_id: Optional[str]        # from its MANIFEST.json; None when hand-made or packed without one
    manifest_name: Optional[str]


def decide(trusted: int, sums: str, sig: str, verdict: SignatureVerdict, stamp: Optional[BuildStamp],
           artifacts: List[ArtifactFacts], installed_sequence: Optional[int], allow_downgrade: bool) -> Optional[str]:
    """None to accept, else the sentence saying why the bundle is refused.

    trusted: how many keys the box trusts (0: no policy); sums, sig: the paths, for the sentence.
    """
    if trusted == 0:
        return None
    if not verdict.present:
        return "%s is missing: this box trusts only signed bundles, and %s is unsigned" % (sig, sums)
    if verdict.problem is not None:
        return "%s %s" % (sig, verdict.problem)
    if stamp is None:
        return "%s carries no build stamp (build-name, build-sequence, build-id), so it cannot be checked" % sums
    for art in artifacts:
        if not art.covered:
            return "%s does not match the signed %s: it was changed after signing or is not listed there" % (
                art.name, sums)
        if art.build_id is None:
            return "%s carries no build id, so it cannot be bound to the signed build %s" % (art.name, stamp.build_id)
        if art.build_id != stamp.build_id:
            return "%s is from build %s but %s is signed for build %s: artifacts of two builds cannot be mixed" % (
                art.name, art.build_id[:16], sums, stamp.build_id[:16])
        if art.manifest_name is not None and art.manifest_name != stamp.name:
            return "%s is built from manifest %s but %s is signed for %s" % (art.name, art.manifest_name, sums,
                                                                          stamp.name)
    if installed_sequence is not None and stamp.sequence < installed_sequence and not allow_downgrade:
        return "%s is build %d of %s, older than the installed build %d: a downgrade (--allow-downgrade permits it)" % (
            sums, stamp.sequence, stamp.name, installed_sequence)
    return None
