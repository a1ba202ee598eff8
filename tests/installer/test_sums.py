"""SHA256SUMS and the upload folder: sizes first, so a truncated upload is named with both sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cosyinstall.uploads import find_uploads, scan_uploads, verify_uploads
from cosyinstall.errors import ArtifactRejected
from cosyinstall.sums import SumEntry, format_sums, parse_sums


def test_format_then_parse_round_trips_with_sizes() -> None:
    text = format_sums([("b.zip", "b" * 64, 20), ("a.zip", "a" * 64, 10)])
    assert text.splitlines()[0] == "# size 10 a.zip"
    assert parse_sums(text) == {"a.zip": SumEntry("a" * 64, 10), "b.zip": SumEntry("b" * 64, 20)}


def test_plain_sha256sum_output_parses_without_sizes() -> None:
    assert parse_sums("%s *x.zip\n" % ("c" * 64)) == {"x.zip": SumEntry("c" * 64, None)}


@pytest.mark.parametrize("text, words", [
    ("nonsense\n", "not in sha256sum format"),
    ("%s  ../x.zip\n" % ("a" * 64), "not a plain file name"),
    ("%s  x.zip\n%s  x.zip\n" % ("a" * 64, "b" * 64), "twice"),
])
def test_bad_sums_files_are_refused(text: str, words: str) -> None:
    with pytest.raises(ArtifactRejected) as err:
        parse_sums(text, "up/SHA256SUMS")
    assert words in err.value.message and "up/SHA256SUMS" in err.value.message


def _upload(folder: Path, name: str, data: bytes, listed_size: int = -1) -> None:
    (folder / name).write_bytes(data)
    sums = folder / "SHA256SUMS"
    old = sums.read_text() if sums.exists() else ""
    size = len(data) if listed_size < 0 else listed_size
    sums.write_text(old + "# size %d %s\n%s  %s\n" % (size, name, hashlib.sha256(data).hexdigest(), name))


def test_truncated_upload_names_file_and_both_sizes(tmp_path: Path) -> None:
    _upload(tmp_path, "pretrained_models.zip", b"x" * 100, listed_size=4096)
    uploads, problems, has_sums = scan_uploads(str(tmp_path))
    assert has_sums and not uploads
    message = problems["pretrained_models.zip"].message
    assert "pretrained_models.zip is truncated: 100 bytes on disk, 4096 expected" in message
    with pytest.raises(ArtifactRejected):
        find_uploads(str(tmp_path))


def test_listed_but_missing_zip_is_a_problem_and_a_missing_pyz_is_not(tmp_path: Path) -> None:
    _upload(tmp_path, "offline_packages.zip", b"zip")
    (tmp_path / "SHA256SUMS").write_text((tmp_path / "SHA256SUMS").read_text()
                                          + "%s  pretrained_models.zip\n%s  cosyinstall.pyz\n" % ("a" * 64, "b" * 64))
    uploads, problems, _ = scan_uploads(str(tmp_path))
    assert set(uploads) == {"offline_packages.zip"}
    assert "is missing" in problems["pretrained_models.zip"].message
    assert "cosyinstall.pyz" not in problems


def test_without_sums_zips_are_taken_unverified_but_cosybuild_verify_still_requires_it(tmp_path: Path) -> None:
    (tmp_path / "offline_packages.zip").write_bytes(b"zip")
    uploads, problems, has_sums = scan_uploads(str(tmp_path))
    assert not has_sums and not problems
    assert uploads["offline_packages.zip"].expected is None
    assert verify_uploads(uploads, {}) == {}
    with pytest.raises(ArtifactRejected) as err:
        find_uploads(str(tmp_path))
    assert "SHA256SUMS is missing" in err.value.message


def test_a_zip_not_listed_in_sums_is_not_ignored(tmp_path: Path) -> None:
    _upload(tmp_path, "offline_packages.zip", b"zip")
    (tmp_path / "pretrained_models.zip").write_bytes(b"hand made")
    uploads, _, _ = scan_uploads(str(tmp_path))
    assert uploads["pretrained_models.zip"].expected is None


def test_empty_folder_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as err:
        scan_uploads(str(tmp_path))
    assert "holds neither offline_packages.zip nor pretrained_models.zip" in err.value.message


def test_verified_upload_is_not_hashed_again_while_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cosyinstall.uploads as bundle

    _upload(tmp_path, "cosyinstall.pyz", b"pyz")
    _upload(tmp_path, "offline_packages.zip", b"zip")
    uploads, _, _ = scan_uploads(str(tmp_path))
    cache = verify_uploads(uploads, {})
    assert set(cache) == {"cosyinstall.pyz", "offline_packages.zip"}

    def no_hashing(*_a, **_k):
        raise AssertionError("an unchanged, verified upload was hashed again")

    monkeypatch.setattr(bundle, "hash_file", no_hashing)
    assert verify_uploads(uploads, cache) == cache
    # A changed file (new size, mtime and inode) is hashed again.
    (tmp_path / "offline_packages.zip").unlink()
    (tmp_path / "SHA256SUMS").unlink()
    _upload(tmp_path, "cosyinstall.pyz", b"pyz")
    _upload(tmp_path, "offline_packages.zip", b"zip2")
    uploads, _, _ = scan_uploads(str(tmp_path))
    with pytest.raises(AssertionError):
        verify_uploads(uploads, cache)
