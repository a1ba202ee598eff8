"""Which keys each table of a build manifest may hold; an unknown key is exit 2 with the nearest valid one.

ALLOWED is the one list: a new manifest key is one more name in its table's tuple, a new
table one more entry. Tables are named by their TOML path ("server.probe"); an array of
tables ("[[models]]", "[[server.prepare]]") is checked entry by entry. docs/manifest.md
describes every key listed here (a test checks that too).
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from cosyinstall.errors import UsageError

__all__ = ["ALLOWED", "ARRAY_TABLES", "check_keys", "nearest"]

ALLOWED: dict[str, tuple[str, ...]] = {
    "": ("name", "target", "packages", "app", "models", "server"),
    "target": ("python", "platform", "bundle-python", "shared-libpython", "gpu"),
    "target.gpu": ("min-compute-capability", "min-driver", "min-memory-gb"),
    "packages": ("requirements", "requirements-file", "index-url", "extra-index-urls", "find-links",
                 "only-binary", "exclude-newer"),
    "app": ("git", "rev", "submodules", "path"),
    "models": ("name", "source", "repo", "revision", "include", "exclude", "unzip", "install-wheels"),
    "server": ("command", "launcher", "port", "ready-log", "health-path", "ready-timeout", "silence-timeout",
               "build-outputs", "prepare", "probe"),
    "server.prepare": ("name", "command", "creates", "clean", "timeout", "gpu-keyed"),
    "server.probe": ("method", "path", "form", "json", "files", "expect", "min-bytes", "timeout"),
}

# Tables written as [[name]]: a list of tables, each checked against the same keys.
ARRAY_TABLES = ("models", "server.prepare")


def nearest(key: str, allowed: tuple[str, ...]) -> str | None:
    """The valid key a typo most likely meant (`requirement` -> `requirements`, `ready_log` -> `ready-log`)."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(key.replace("_", "-"), allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def _label(table: str, index: int | None) -> str:
    if table == "":
        return "the top level"
    if index is not None:
        return "[[%s]] #%d" % (table, index + 1)
    return "[%s]" % table


def _check_one(data: Mapping[str, Any], table: str, where: str, index: int | None) -> None:
    allowed = ALLOWED[table]
    for key in data:
        if key in allowed:
            continue
        guess = nearest(key, allowed)
        hint = ("the nearest valid key is %s" % guess) if guess else ("valid keys: %s" % ", ".join(allowed))
        raise UsageError("%s %s has an unknown key %s" % (where, _label(table, index), key), hint)
    for key, value in data.items():
        child = key if table == "" else table + "." + key
        if child not in ALLOWED:
            continue
        if child in ARRAY_TABLES and isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, Mapping):
                    _check_one(entry, child, where, i)
        elif isinstance(value, Mapping):
            _check_one(value, child, where, None)


def check_keys(raw: Mapping[str, Any], where: str) -> None:
    """Raise a UsageError (exit 2) naming the first unknown key of any table, with the nearest valid key."""
    _check_one(raw, "", where, None)
