"""Every English message template in a package's source, found by AST: what the catalogue must translate.

A template is a string literal (or the left side of `literal % args`) given to an error class
(message, hint), to a preflight Finding (check, detail, hint), to a reporter's info/warn, to
print, or as argparse/click help and description. Helpers for tests only.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

ERROR_CLASSES = {"CosyError", "UsageError", "ArtifactRejected", "EnvironmentUnsuitable", "DiskFull", "NotReady",
                 "ManifestError", "TransferError"}
REPORTER_METHODS = {"info", "warn"}
HELP_KEYWORDS = {"help", "description", "hint"}


def _strings(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        yield from _strings(node.left)
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        # "a" + "b": each literal part is a template of its own
        yield from _strings(node.left)
        yield from _strings(node.right)


def _name(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def templates_in(source: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        args: list[ast.AST] = []
        if name in ERROR_CLASSES:
            args = list(node.args[:2])
        elif name == "Finding":
            args = [node.args[i] for i in (0, 2, 4) if len(node.args) > i]
        elif name in REPORTER_METHODS and isinstance(node.func, ast.Attribute):
            args = list(node.args[:1])
        elif name in ("print", "echo"):  # print, click.echo
            args = list(node.args[:1])
        elif name == "_say":  # cosyinstall's result lines: _say(args, text)
            args = list(node.args[1:2])
        elif name == "Verdict":  # readiness: Verdict(outcome, message, hint, ...)
            args = list(node.args[1:3])
        elif name == "WaitLine":  # WaitLine(reporter, label)
            args = list(node.args[1:2])
        elif name == "append" and isinstance(node.func, ast.Attribute) and "problems" in ast.unparse(node.func.value):
            args = list(node.args[:1])  # verify's problem lines
        args += [kw.value for kw in node.keywords if kw.arg in HELP_KEYWORDS]
        for arg in args:
            for text in _strings(arg):
                if text.strip(" \n!") and any(c.isalpha() for c in text):
                    yield node.lineno, text


def package_templates(package: Path) -> dict[str, str]:
    """template -> "file:line" of its first use, for every .py file of the package."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for line, text in templates_in(path.read_text(encoding="utf-8")):
            found.setdefault(text, "%s:%d" % (path.name, line))
    return found
