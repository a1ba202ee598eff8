"""Finding and running the builder's own uv, with index options taken from the manifest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from cosyinstall.errors import EnvironmentUnsuitable

from cosybuild.profile import Packages, Profile, relative

__all__ = ["uv_bin", "uv_version", "index_args", "run_uv"]


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which(os.environ.get("UV") or "uv")
        if not found:
            raise EnvironmentUnsuitable("uv is not installed", "pip install uv")
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


def run_uv(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    return subprocess.run([uv_bin(), *args], capture_output=True, text=True, cwd=cwd, env=env)
