"""Member-name safety: every trick a zip can play with a path is refused before extraction."""

from __future__ import annotations

import stat
import zipfile

import pytest

from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_mode, check_member_name, check_raw_name, fold, legacy_name


@pytest.mark.parametrize("name", [
    "app/server.py", "wheels/six-1.16.0-py2.py3-none-any.whl", "CosyVoice2-0.5B/llm.pt", "a/b c/d.txt",
    "模型/配置.json",
])
def test_plain_relative_names_pass(name: str) -> None:
    check_member_name(name, "x.zip")


@pytest.mark.parametrize("name, why", [
    ("/etc/passwd", "absolute"),
    ("../evil", ".."),
    ("a/../../evil", ".."),
    ("a/./b", "'.'"),
    ("a//b", "empty path component"),
    ("..\\evil", "backslash"),
    ("a\\b", "backslash"),
    ("C:/Windows/evil", "drive letter"),
    ("c:evil", "drive letter"),
    ("a\x00b", "NUL"),
    ("a\nb", "control character"),
    ("dir/", "directory"),
    ("", "empty"),
    ("a/" + "x" * 256, "longer than 255"),
])
def test_unsafe_names_are_refused_naming_the_reason(name: str, why: str) -> None:
    with pytest.raises(ArtifactRejected) as err:
        check_member_name(name, "offline_packages.zip")
    assert "offline_packages.zip" in err.value.message and why in err.value.message


@pytest.mark.parametrize("mode, ok", [
    (stat.S_IFREG | 0o644, True),
    (stat.S_IFREG | 0o755, True),
    (0, True),  # no Unix mode recorded (Windows tools): a plain file
    (0o600, True),  # permission bits without a file type, as zipfile.writestr records: a plain file
    (stat.S_IFLNK | 0o777, False),
    (stat.S_IFCHR | 0o600, False),
    (stat.S_IFBLK | 0o600, False),
    (stat.S_IFIFO | 0o600, False),
    (stat.S_IFSOCK | 0o600, False),
    (stat.S_IFDIR | 0o755, False),
])
def test_only_regular_files_pass_the_mode_check(mode: int, ok: bool) -> None:
    if ok:
        check_member_mode("m", mode << 16, "x.zip")
    else:
        with pytest.raises(ArtifactRejected) as err:
            check_member_mode("m", mode << 16, "x.zip")
        assert "'m'" in err.value.message
        if stat.S_ISLNK(mode):
            assert "symbolic link" in err.value.message


def test_a_zip_made_off_unix_has_no_unix_mode_to_judge() -> None:
    check_member_mode("m", (stat.S_IFLNK | 0o777) << 16, "x.zip", unix=False)


def test_directory_entries_may_be_directories_but_not_links() -> None:
    check_member_mode("d/", (stat.S_IFDIR | 0o755) << 16, "x.zip", directory=True)
    with pytest.raises(ArtifactRejected):
        check_member_mode("d/", (stat.S_IFLNK | 0o777) << 16, "x.zip", directory=True)


def test_a_nul_hidden_by_zipfile_is_still_seen() -> None:
    info = zipfile.ZipInfo("placeholder")
    info.orig_filename = "evil.txt\x00.jpg"  # what zipfile keeps of the stored name
    with pytest.raises(ArtifactRejected) as err:
        check_raw_name(info, "x.zip")
    assert "NUL" in err.value.message


def test_case_folding_finds_names_that_collide_on_windows_and_macos() -> None:
    assert fold("Model/Config.JSON") == fold("model/config.json")


def _info(raw_name: bytes, create_system: int, utf8: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("x")
    info.orig_filename = raw_name.decode("utf-8" if utf8 else "cp437")
    info.flag_bits = 0x800 if utf8 else 0
    info.create_system = create_system
    return info


def test_legacy_names_from_windows_are_repaired_before_the_same_checks() -> None:
    # Chinese Windows Explorer: GBK bytes, no UTF-8 flag, backslash separators.
    gbk = _info("模型\\配置.json".encode("gbk"), create_system=0)
    assert legacy_name(gbk) == "模型/配置.json"
    # Unflagged UTF-8 (many Linux tools).
    utf8 = _info("声音/a.bin".encode("utf-8"), create_system=3)
    assert legacy_name(utf8) == "声音/a.bin"
    # The repair never makes a trick safe: '..' is still there to be refused.
    trick = _info(b"..\\..\\evil", create_system=0)
    with pytest.raises(ArtifactRejected):
        check_member_name(legacy_name(trick), "x.zip")
    # A Unix zip keeps its backslash, which check_member_name refuses.
    unix = _info(b"a\\b", create_system=3)
    with pytest.raises(ArtifactRejected):
        check_member_name(legacy_name(unix), "x.zip")
