"""Signed bundles end to end: `cosybuild pack --sign` with real ssh-keygen keys, `cosyinstall trust`,
then `apply` (offline) accepting the good bundle and refusing every attack with exit 3 and one
sentence, once with ssh-keygen as the verifier and once with the built-in one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from cosyinstall.tree import InstallTree

from support import apply_argv, cosybuild, one_sentence, pyz, run

pytestmark = pytest.mark.e2e

VERIFIERS = ("ssh-keygen", "builtin")


def _key(folder: Path, kind: str) -> Path:
    key = folder / ("id_" + kind)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", kind, "-f", str(key)]
                   + (["-b", "2048"] if kind == "rsa" else []), check=True)
    return key


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> dict:
    """Build 2 signed with an Ed25519 key and build 3 signed with an RSA key, same inputs."""
    root = tmp_path_factory.mktemp("signed")
    keys = {"ed": _key(root, "ed25519"), "rsa": _key(root, "rsa")}
    env = dict(os.environ, COSYBUILD_STATE=str(root / "state"))
    out = {"keys": keys, "env": env, "root": root}
    for name, seq, key in (("a", "2", keys["ed"]), ("b", "3", keys["rsa"])):
        dist = root / name
        proc = cosybuild("pack", "demo", "--out", str(dist), "--sign", str(key), "--sequence", seq, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "build %s of demo" % seq in proc.stdout
        out[name] = dist
    return out


def _trust(dist: Path, to: Path, key: Path) -> None:
    proc = run(pyz(dist, "trust", "--to", str(to), str(key) + ".pub"))
    assert proc.returncode == 0, proc.stderr
    assert "trusted: " in proc.stdout


def _apply(dist: Path, to: Path, verifier: str, *extra: str) -> subprocess.CompletedProcess:
    return run(apply_argv(dist, to, *extra), env=dict(os.environ, COSYINSTALL_SIG_VERIFIER=verifier))


def _sign(sums: Path, key: Path, namespace: str = "cosy-offline-bundle@v1") -> None:
    with sums.open("rb") as data, sums.with_name("SHA256SUMS.sig").open("wb") as sig:
        subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", namespace], stdin=data, stdout=sig,
                       check=True)


def test_pack_signs_a_stamped_sums_that_sha256sum_still_checks(signed: dict) -> None:
    dist = signed["a"]
    text = (dist / "SHA256SUMS").read_text()
    assert text.startswith("# build-name demo\n# build-sequence 2\n# build-id ")
    check = run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3, check.stdout + check.stderr
    allowed = dist.parent / "allowed"
    allowed.write_text("me " + Path(str(signed["keys"]["ed"]) + ".pub").read_text())
    with (dist / "SHA256SUMS").open("rb") as data:
        ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "me", "-n",
                             "cosy-offline-bundle@v1", "-s", str(dist / "SHA256SUMS.sig")], stdin=data,
                            capture_output=True)
    assert ok.returncode == 0, ok.stderr
    build_ids = set()
    for name in ("offline_packages.zip", "pretrained_models.zip"):
        with zipfile.ZipFile(dist / name) as zf:
            build_ids.add(json.loads(zf.read("MANIFEST.json"))["build-id"])
    assert build_ids == {text.split("# build-id ")[1].split()[0]}


def test_sequence_is_kept_and_only_goes_up(signed: dict, tmp_path: Path) -> None:
    env = dict(signed["env"], COSYBUILD_STATE=str(tmp_path / "state"))
    first = cosybuild("pack", "demo", "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert first.returncode == 0 and "build 1 of demo" in first.stdout, first.stderr
    again = cosybuild("pack", "demo", "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert "build 1 of demo" in again.stdout, again.stderr  # same inputs: same build, same bytes
    up = cosybuild("pack", "demo", "--only", "models", "--out", str(tmp_path / "d"), "--sequence", "4", env=env)
    assert up.returncode == 0 and "build 4 of demo" in up.stdout
    down = cosybuild("pack", "demo", "--only", "models", "--out", str(tmp_path / "d"), "--sequence", "3", env=env)
    assert down.returncode == 2 and "below 4" in one_sentence(down.stderr)


def test_signing_refuses_an_artifact_of_another_build(signed: dict, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(signed["a"], dist)  # packages from build 2; --only models makes build 5
    proc = cosybuild("pack", "demo", "--only", "models", "--out", str(dist), "--sign", str(signed["keys"]["ed"]),
                     "--sequence", "5", env=signed["env"])
    assert proc.returncode == 3
    assert "offline_packages.zip is from build" in one_sentence(proc.stderr)


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_good_bundles_install_and_a_downgrade_is_refused(signed: dict, tmp_path: Path, verifier: str) -> None:
    to = tmp_path / "CosyVoice"
    _trust(signed["a"], to, signed["keys"]["ed"])
    _trust(signed["a"], to, signed["keys"]["rsa"])
    first = _apply(signed["a"], to, verifier)
    assert first.returncode == 0, first.stderr
    expected = "checked with %s" % ("ssh-keygen" if verifier == "ssh-keygen" else "the built-in verifier")
    assert expected in first.stdout and "build 2 of demo" in first.stdout
    assert json.loads(Path(InstallTree(str(to)).installed_builds).read_text())["demo"]["sequence"] == 2
    newer = _apply(signed["b"], to, verifier)  # RSA-signed build 3
    assert newer.returncode == 0, newer.stderr
    assert json.loads(Path(InstallTree(str(to)).installed_builds).read_text())["demo"]["sequence"] == 3
    older = _apply(signed["a"], to, verifier)
    assert older.returncode == 3
    assert "older than the installed build 3: a downgrade" in one_sentence(older.stderr)
    allowed = _apply(signed["a"], to, verifier, "--allow-downgrade")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(Path(InstallTree(str(to)).installed_builds).read_text())["demo"]["sequence"] == 2


def test_rollback_to_a_kept_generation_is_not_a_downgrade(signed: dict, tmp_path: Path) -> None:
    to = tmp_path / "CosyVoice"
    _trust(signed["a"], to, signed["keys"]["ed"])
    _trust(signed["a"], to, signed["keys"]["rsa"])
    builds = Path(InstallTree(str(to)).installed_builds)
    assert _apply(signed["a"], to, "builtin").returncode == 0            # build 2: generation 1
    assert _apply(signed["b"], to, "builtin").returncode == 0            # build 3: generation 2
    assert json.loads(builds.read_text())["demo"]["sequence"] == 3
    back = run(pyz(signed["a"], "rollback", "--to", str(to)))
    assert back.returncode == 0, back.stdout + back.stderr
    # The kept generation's own build is the installed one again: build 2 is no downgrade now.
    assert json.loads(builds.read_text())["demo"]["sequence"] == 2
    again = _apply(signed["a"], to, "builtin")
    assert again.returncode == 0, again.stdout + again.stderr


def _unsigned(up: Path, signed: dict) -> str:
    (up / "SHA256SUMS.sig").unlink()
    return "SHA256SUMS.sig is missing: this box trusts only signed bundles"


def _other_key(up: Path, signed: dict) -> str:
    _sign(up / "SHA256SUMS", signed["keys"]["rsa"])
    return "which this box does not trust"


def _other_namespace(up: Path, signed: dict) -> str:
    _sign(up / "SHA256SUMS", signed["keys"]["ed"], "file")
    return "namespace 'file'"


def _sums_changed(up: Path, signed: dict) -> str:
    sums = up / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("# build-sequence 2", "# build-sequence 9"))
    return "does not verify over SHA256SUMS"


def _artifact_changed(up: Path, signed: dict) -> str:
    path = up / "pretrained_models.zip"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    # Refused by the one read pass that stages it: its whole-file sha256 must be the signed one.
    return "pretrained_models.zip does not match"


def _two_builds(up: Path, signed: dict) -> str:
    # Even signed by the trusted key, a models zip of build 3 next to build 2's packages is refused.
    shutil.copy(signed["b"] / "pretrained_models.zip", up / "pretrained_models.zip")
    sums = up / "SHA256SUMS"
    old, new = signed["a"] / "pretrained_models.zip", up / "pretrained_models.zip"
    text = sums.read_text().replace(hashlib.sha256(old.read_bytes()).hexdigest(), hashlib.sha256(new.read_bytes()).hexdigest())
    text = text.replace("# size %d pretrained" % old.stat().st_size, "# size %d pretrained" % new.stat().st_size)
    sums.write_text(text)
    _sign(sums, signed["keys"]["ed"])
    return "artifacts of two builds cannot be mixed"


@pytest.mark.parametrize("verifier", VERIFIERS)
@pytest.mark.parametrize("attack", [_unsigned, _other_key, _other_namespace, _sums_changed, _artifact_changed,
                                    _two_builds])
def test_refused_with_one_sentence_and_nothing_installed(signed: dict, tmp_path: Path, verifier: str,
                                                         attack) -> None:
    up = tmp_path / "upload"
    shutil.copytree(signed["a"], up)
    to = tmp_path / "CosyVoice"
    _trust(up, to, signed["keys"]["ed"])
    expected = attack(up, signed)
    proc = _apply(up, to, verifier)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert expected in one_sentence(proc.stderr)
    # Nothing installed: no generation, <to> not even made; the trusted key is kept in the shared state.
    tree = InstallTree(str(to))
    assert not os.path.lexists(to) and not os.path.exists(tree.gens)
    assert os.path.isfile(tree.trusted_keys)
