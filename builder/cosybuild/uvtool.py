"""Finding and running the builder's own uv, with index options taken from the manifest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

from cosyinstall.errors import EnvironmentUnsuitable

from cosybuild.profile import Packages, Profile, relative

__all__ = ["uv_bin", "uv_version", "index_args", "binary_args", "resolver_args", "only_binary", "exclude_newer", "run_uv"]


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which(os.environ.get("UV") or "uv")
        if not found:
            raise EnvironmentUnsuitable("uv is not installed", "pip install uv") from None
        return found


def uv_version() -> str:
    out = subprocess.run([uv_bin(), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+\.\d+\.\d+)", out)
    if not match:
        raise EnvironmentUnsuitable("cannot read uv's version from %r" % out.strip())
    return match.group(1)


def index_args(profile: Profile) -> list[str]:
    """Index options from the manifest; uv's own UV_* variables apply when these are absent."""
    pk: Packages = profile.packages
    args: list[str] = []
    if pk.index_url:
        args += ["--default-index", pk.index_url]
    for url in pk.extra_index_urls:
        args += ["--index", url]
    for link in pk.find_links:
        is_url = "://" in link
        args += ["--find-links", link if is_url else str(relative(profile, link))]
    if pk.extra_index_urls:
        # A package on several indexes is taken from whichever has the best match, so NVIDIA's
        # index can supply the real TensorRT wheels that PyPI only stubs.
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def only_binary(profile: Profile) -> tuple[str, ...]:
    """[packages] only-binary: names that must come as wheels (":all:" for every package)."""
    return profile.packages.only_binary


def exclude_newer(profile: Profile) -> str | None:
    """[packages] exclude-newer: files published later are ignored, so re-locking reproduces."""
    return profile.packages.exclude_newer


def binary_args(profile: Profile) -> list[str]:
    """uv options that forbid sdists for the named packages, so a wheel-stub is never chosen."""
    args: list[str] = []
    for name in only_binary(profile):
        args += ["--only-binary", name]
    return args


def resolver_args(profile: Profile) -> list[str]:
    """Options for resolving a new lock only: locating locked pins later must not filter by date."""
    date = exclude_newer(profile)
    return ["--exclude-newer", date] if date else []


def run_uv(args: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    merged = dict(os.environ)
    merged.setdefault("UV_PYTHON_DOWNLOADS", "never")
    merged.update(env or {})
    return subprocess.run([uv_bin(), *args], capture_output=True, text=True, cwd=cwd, env=merged)
