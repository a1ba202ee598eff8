"""Resolve a manifest's requirements for its target with `uv pip compile` into locked files.

uv writes a PEP 751 pylock for the target platform; we keep name, version, file name, size
and sha256 and drop every URL, so the lock can be fetched later from any index.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cosyinstall.errors import ArtifactRejected

from cosybuild.profile import Profile
from cosybuild.stubs import check_stubs, stub_from_uv_output
from cosybuild.targettags import target_tags, wheel_rank
from cosybuild.uvtool import binary_args, index_args, resolver_args, run_uv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LockedFile", "compile_pylock", "resolve", "resolve_located", "locate", "choose_file", "locked_file",
           "ResolveError", "IndexUnreachable"]


class ResolveError(ArtifactRejected):
    """The requirement set does not resolve for the target; carries uv's explanation."""


class IndexUnreachable(ArtifactRejected):
    """uv could not talk to an index while resolving: a network or settings problem, not the pins."""


# uv's wording when a request failed, as opposed to a resolution that has no answer.
_NETWORK = re.compile(r"Failed to fetch|error sending request|dns error|Connect\b|timed out|HTTP status server error")


@dataclass(frozen=True)
class LockedFile:
    name: str
    version: str
    filename: str
    size: int
    sha256: str

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "filename": self.filename,
                "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LockedFile":
        return cls(str(data["name"]), str(data["version"]), str(data["filename"]), int(data["size"]), str(data["sha256"]))


def _filename(item: dict[str, Any]) -> str:
    if item.get("name"):
        return str(item["name"])
    where = item.get("url") or item.get("path") or ""
    return where.rsplit("/", 1)[-1].split("#", 1)[0]


def _where(profile: Profile, item: dict[str, Any]) -> str | None:
    """The URL uv found a file at; a find-links path becomes a file:// URL."""
    where = item.get("url") or item.get("path")
    if where and "://" not in where:
        where = (profile.base_dir / where).resolve().as_uri()
    return where


def _explain(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return " ".join(lines) or "uv gave no reason"


def compile_pylock(profile: Profile, requirements: Iterable[str], no_deps: bool = False) -> list[dict[str, Any]]:
    """Run uv pip compile for the profile's target; return pylock [[packages]] tables."""
    with tempfile.TemporaryDirectory(prefix="cosybuild-compile-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        out = Path(tmp) / "pylock.toml"
        args = ["pip", "compile", str(req), "-o", str(out), "--quiet", "--no-header",
                "--python-version", profile.target.python, "--python-platform", profile.target.platform,
                *index_args(profile), *binary_args(profile)]
        if no_deps:
            args.append("--no-deps")
        else:
            args += resolver_args(profile)
        proc = run_uv(args, cwd=profile.base_dir)
        if proc.returncode != 0:
            stub = stub_from_uv_output(proc.stderr)
            if stub is not None:
                raise stub
            if _NETWORK.search(proc.stderr) and "No solution found" not in proc.stderr:
                raise IndexUnreachable("uv could not reach an index while resolving %s: %s" % (profile.path, _explain(proc.stderr)),
                                       "check the network or proxy, and the index settings ([packages] index-url, "
                                       "extra-index-urls, find-links, or uv's UV_* variables)")
            raise ResolveError("the requirements of %s do not resolve for CPython %s on %s: %s"
                               % (profile.path, profile.target.python, profile.target.platform, _explain(proc.stderr)),
                               "change the pins in the manifest and run cosybuild lock again")
        with out.open("rb") as handle:
            return list(tomllib.load(handle).get("packages", []))


def choose_file(pkg: dict[str, Any], python: str = "", platform: str = "") -> dict[str, Any] | None:
    """The wheel the target would install (best tag first), else the sdist."""
    wheels = list(pkg.get("wheels") or [])
    tags = target_tags(python, platform) if python and platform else ()
    if tags:
        ranked = [(wheel_rank(_filename(w), tags), i, w) for i, w in enumerate(wheels)]
        ranked = sorted((r, i, w) for r, i, w in ranked if r is not None)
        if ranked:
            return ranked[0][2]
    if wheels:
        # A platform without a manylinux floor: uv already kept only compatible wheels.
        return wheels[0]
    return pkg.get("sdist")


def locked_file(pkg: dict[str, Any], item: dict[str, Any]) -> LockedFile:
    hashes = item.get("hashes") or {}
    size = item.get("size")
    if "sha256" not in hashes or size is None:
        raise ArtifactRejected("the index gave no size or sha256 for %s %s" % (pkg.get("name"), pkg.get("version")),
                               "use an index that publishes them (PEP 691/700)")
    return LockedFile(str(pkg["name"]), str(pkg["version"]), _filename(item), int(size), str(hashes["sha256"]))


def resolve_located(profile: Profile, requirements: Iterable[str]) -> list[tuple[LockedFile, str | None]]:
    """Locked files for the target with the URL each was found at (used only at lock time)."""
    out = []
    for pkg in compile_pylock(profile, requirements):
        item = choose_file(pkg, profile.target.python, profile.target.platform)
        if item is None:
            raise ArtifactRejected("uv found no file of %s %s for %s" % (pkg.get("name"), pkg.get("version"), profile.target.platform))
        out.append((locked_file(pkg, item), _where(profile, item)))
    return sorted(out, key=lambda pair: pair[0].name)


def resolve(profile: Profile, requirements: Iterable[str]) -> list[LockedFile]:
    """Resolve and refuse wheel-stubs: every sdist chosen is opened to check its build backend."""
    located = resolve_located(profile, requirements)
    check_stubs((f.name, f.version, f.filename, url) for f, url in located if not f.is_wheel and url)
    return [f for f, _url in located]


def locate(profile: Profile, files: Iterable[LockedFile]) -> dict[str, str]:
    """Find where each locked file lives on the index configured now: filename -> URL.

    The pins are resolved again with --no-deps, so uv speaks to whatever index (mirror, extra
    index, find-links) the manifest and the UV_* variables name at fetch time.
    """
    files = list(files)
    urls: dict[str, str] = {}
    if not files:
        return urls
    for pkg in compile_pylock(profile, ["%s==%s" % (f.name, f.version) for f in files], no_deps=True):
        for item in list(pkg.get("wheels") or []) + ([pkg["sdist"]] if pkg.get("sdist") else []):
            where = _where(profile, item)
            if where:
                urls[_filename(item)] = where
    missing = [f.filename for f in files if f.filename not in urls]
    if missing:
        raise ArtifactRejected("the configured index does not offer %s%s" % (
            missing[0], " and %d more locked files" % (len(missing) - 1) if len(missing) > 1 else ""),
            "check the index settings, or run cosybuild lock against this index")
    return urls
