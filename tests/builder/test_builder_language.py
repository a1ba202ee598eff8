"""Issue 14, points 2 and 6 on both tools: every option a message names exists, and cosybuild speaks
Chinese through the same catalogue mechanism as cosyinstall."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import click

from cosybuild.catalogue_zh import ZH as BUILDER_ZH
from cosybuild.cli import cli
from cosyinstall.catalogue_zh import ZH as INSTALLER_ZH
from cosyinstall.cli import _parser
from cosyinstall.i18n import SPEC
from messages import package_templates
from support import REPO, cosybuild, one_sentence

INSTALLER = package_templates(REPO / "installer" / "cosyinstall")
BUILDER = package_templates(REPO / "builder" / "cosybuild")
# Options of other programs that messages quote on purpose, each with the program it belongs to.
FOREIGN = {
    "--partial": "rsync (how to resume an upload by hand)",
    "--enable-shared": "CPython's configure (why an interpreter lacks libpython)",
    "--only-binary": "pip download (how to fetch uv's wheel)",
    "--platform": "pip download (how to fetch uv's wheel)",
    # preflight's /dev/shm hint quotes docker's option: the container is made before cosyinstall runs
    "--shm-size": "docker run (how to give a container a larger /dev/shm)",
}


def test_every_builder_template_has_its_chinese_entry() -> None:
    both = dict(INSTALLER_ZH, **BUILDER_ZH)
    missing = ["%s  (%s)" % (t, where) for t, where in sorted(BUILDER.items()) if t not in both]
    assert not missing, "add these to builder/cosybuild/catalogue_zh.py:\n" + "\n".join(missing)
    wrong = [t for t, zh in BUILDER_ZH.items() if len(SPEC.findall(t)) != len(SPEC.findall(zh))]
    assert not wrong, wrong


def _click_options() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"": set()}
    for name, command in cli.commands.items():
        found[name] = {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
    found[""] = {o for p in cli.params if isinstance(p, click.Option) for o in p.opts}
    return found


def _argparse_options() -> dict[str, set[str]]:
    parser = _parser()
    found: dict[str, set[str]] = {"": {o for a in parser._actions for o in a.option_strings}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {o for a in sub._actions for o in a.option_strings}
    return found


def _named_options(templates: dict[str, str], tool: str, options: dict[str, set[str]]) -> list[str]:
    """Each `--xxx` a message names: after `TOOL CMD` it must be CMD's, else some command's of TOOL."""
    every = set().union(*options.values())
    bad = []
    for text, where in templates.items():
        for part in re.split(r"[;()]|, or |, then ", text):
            command = re.search(r"\b(cosybuild|cosyinstall) ([a-z]+)", part)
            for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", part):
                if option in FOREIGN:
                    continue
                if command is not None:
                    ok = option in _click_options().get(command.group(2), set()) if command.group(1) == "cosybuild" \
                        else option in _argparse_options().get(command.group(2), set())
                else:
                    ok = option in every
                if not ok:
                    bad.append("%s names %s (%s)" % (where, option, text))
    return bad


def test_every_option_a_message_names_exists() -> None:
    bad = _named_options(INSTALLER, "cosyinstall", _argparse_options())
    bad += _named_options(BUILDER, "cosybuild", _click_options())
    assert not bad, "\n".join(bad)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANG", "LC_"))}
    env.update(extra)
    return env


def test_cosybuild_fails_in_chinese_under_a_chinese_locale(tmp_path: Path) -> None:
    manifest = tmp_path / "t.toml"
    manifest.write_text('name = "t"\n[target]\npython = "3.10"\nplatform = "x86_64-manylinux_2_28"\n'
                        '[packages]\nrequirement = ["six"]\n', encoding="utf-8")
    proc = cosybuild("lock", str(manifest), env=_env(LANG="zh_CN.UTF-8"))
    assert proc.returncode == 2
    line = one_sentence(proc.stderr)
    assert line.startswith("cosybuild: 错误: ") and "有未知的键 requirement" in line and "最接近的有效键是 requirements" in line
    english = cosybuild("lock", str(manifest), "--lang", "en", env=_env(LANG="zh_CN.UTF-8"))
    assert "has an unknown key requirement" in one_sentence(english.stderr)


def test_cosybuild_help_in_chinese() -> None:
    proc = cosybuild("--lang", "zh", "pack", "--help", env=_env())
    assert proc.returncode == 0
    assert "用法:" in proc.stdout and "存放安装包的目录。" in proc.stdout and "只打包一个安装包。" in proc.stdout
