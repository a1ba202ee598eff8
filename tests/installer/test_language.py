"""Issue 14, point 6: cosyinstall speaks Simplified Chinese when asked, through one catalogue; every
English message template in the installer's source has its Chinese entry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosyinstall.catalogue_zh import ZH
from cosyinstall.i18n import SPEC, Translator, wants_chinese
from messages import package_templates
from support import REPO, one_sentence, pyz, run

TEMPLATES = package_templates(REPO / "installer" / "cosyinstall")


def test_the_collector_sees_the_installers_messages() -> None:
    assert len(TEMPLATES) > 150
    assert "preflight passed: %s can be installed into %s" in TEMPLATES  # print
    assert "pass --from %s" in TEMPLATES  # an error's hint
    assert "seconds between SIGTERM and SIGKILL" in TEMPLATES  # argparse help


def test_every_english_template_has_its_chinese_entry() -> None:
    missing = ["%s  (%s)" % (t, where) for t, where in sorted(TEMPLATES.items()) if t not in ZH]
    assert not missing, "add these to installer/cosyinstall/catalogue_zh.py:\n" + "\n".join(missing)


def test_every_entry_keeps_the_placeholders() -> None:
    wrong = [t for t, zh in ZH.items() if len(SPEC.findall(t)) != len(SPEC.findall(zh))]
    assert not wrong, wrong


@pytest.mark.parametrize("argv, env, zh", [
    ([], {"LANG": "zh_CN.UTF-8"}, True),
    ([], {"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, True),
    ([], {"LC_MESSAGES": "zh_CN", "LANG": "C"}, True),
    ([], {"LC_ALL": "C.UTF-8", "LANG": "zh_CN.UTF-8"}, False),
    (["--lang", "zh"], {}, True),
    (["check", "--lang=en"], {"LANG": "zh_CN.UTF-8"}, False),
    ([], {}, False),
])
def test_language_choice(argv: list, env: dict, zh: bool) -> None:
    assert wants_chinese(argv, env) is zh


def test_a_formatted_sentence_is_translated_piece_by_piece() -> None:
    t = Translator([ZH])
    english = "/up/offline_packages.zip is truncated: 1000 bytes on disk, 2000 expected; upload it again."
    assert t.text(english) == "/up/offline_packages.zip 不完整: 磁盘上 1000 字节，应为 2000；请重新上传。"
    assert t.text("a line no entry knows") == "a line no entry knows"


def test_placeholders_and_spaces_alone_never_split_a_sentence_into_words() -> None:
    # "%s %s" is a template (trust.py): as a pattern it would turn "the server is ok" into "the 服务 is 正常".
    t = Translator([ZH])
    assert "%s %s" in ZH and "server" in ZH and "ok" in ZH
    assert t.text("the server is ok") == "the server is ok"
    # "%s; %s" pairs no two parts: each part of a message; hint line keeps its own entry.
    assert t.text("/k/id.pub does not exist; pass the signer's public key file (id_ed25519.pub).") == \
        "/k/id.pub 不存在；请传入签名者的公钥文件（id_ed25519.pub）。"


def test_a_check_row_whose_name_holds_a_space_is_translated_by_column() -> None:
    t = Translator([ZH])
    line = t.line("  warn  gpu need    no GPU found, but the bundle needs a GPU; the server will not start here")
    assert line == "  警告  GPU 需求    未找到 GPU，但安装包需要 GPU；服务无法在本机启动", line


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANG", "LC_"))}
    env.update(extra)
    return env


def test_a_failure_under_a_chinese_locale_is_one_chinese_sentence(dist: Path, tmp_path: Path) -> None:
    with open(dist / "offline_packages.zip", "r+b") as handle:
        handle.truncate(1000)
    argv = pyz(dist, "check", "--from", str(dist), "--to", str(tmp_path / "to"))
    proc = run(argv, env=_env(LANG="zh_CN.UTF-8"))
    assert proc.returncode == 3
    line = one_sentence(proc.stderr)
    assert line.startswith("cosyinstall: 错误: ") and "不完整" in line and "请重新上传" in line, line
    assert "失败" in proc.stdout and "磁盘" in proc.stdout
    english = run(argv, env=_env(LANG="en_US.UTF-8"))
    assert english.returncode == 3 and "is truncated" in one_sentence(english.stderr)
    forced = run(argv + ["--lang", "en"], env=_env(LANG="zh_CN.UTF-8"))
    assert "is truncated" in one_sentence(forced.stderr)


def test_help_in_chinese(dist: Path) -> None:
    proc = run(pyz(dist, "--lang", "zh", "apply", "--help"), env=_env())
    assert proc.returncode == 0
    assert "用法:" in proc.stdout and "只安装，不启动服务" in proc.stdout and "检查、安装并启动服务" in proc.stdout
