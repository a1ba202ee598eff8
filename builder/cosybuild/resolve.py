"""Resolve a manifest's requirements for its target with `uv pip compile` into locked files.

uv writes a PEP 751 pylock for the target platform; we keep name, version, file name, size
and sha256 and drop every URL, so the lock can be fetched later from any index.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cosyinstall.errors import ArtifactRejected

from cosybuild.profile import Profile
from cosybuild.uvtool import index_args, run_uv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LockedFile", "compile_pylock", "resolve", "locate", "ResolveError"]


class ResolveError(ArtifactRejected):
    """The requirement set does not resolve for the target; carries uv's explanation."""


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


def compile_pylock(profile: Profile, requirements: Iterable[str], no_deps: bool = False) -> list[dict[str, Any]]:
    """Run uv pip compile for the profile's target; return pylock [[packages]] tables."""
    with tempfile.TemporaryDirectory(prefix="cosybuild-compile-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        out = Path(tmp) / "pylock.toml"
        args = ["pip", "compile", str(req), "-o", str(out), "--quiet", "--no-header",
                "--python-version", profile.target.python, "--python-platform", profile.target.platform,
                *index_args(profile)]
        if no_deps:
            args.append("--no-deps")
        proc = run_uv(args, cwd=profile.base_dir)
        if proc.returncode != 0:
            explanation = " ".join(line.strip() for line in proc.stderr.strip().splitlines() if line.strip())
            raise ResolveError("the requirements of %s do not resolve for CPython %s on %s: %s"
                               % (profile.path, profile.target.python, profile.target.platform, explanation or "uv gave no reason"),
                               "change the pins in the manifest and run cosybuild lock again")
        with out.open("rb") as handle:
            return list(tomllib.load(handle).get("packages", []))


def choose_file(pkg: dict[str, Any]) -> dict[str, Any] | None:
    wheels = pkg.get("wheels") or []
    if wheels:
        return wheels[0]
    return pkg.get("sdist")


def locked_file(pkg: dict[str, Any], item: dict[str, Any]) -> LockedFile:
    hashes = item.get("hashes") or {}
    size = item.get("size")
    if "sha256" not in hashes or size is None:
        raise ArtifactRejected("the index gave no size or sha256 for %s %s" % (pkg.get("name"), pkg.get("version")),
                               "use an index that publishes them (PEP 691/700)")
    return LockedFile(str(pkg["name"]), str(pkg["version"]), _filename(item), int(size), str(hashes["sha256"]))


def resolve(profile: Profile, requirements: Iterable[str]) -> list[LockedFile]:
    files = []
    for pkg in compile_pylock(profile, requirements):
        item = choose_file(pkg)
        if item is None:
            raise ArtifactRejected("uv found no file of %s %s for %s" % (pkg.get("name"), pkg.get("version"), profile.target.platform))
        files.append(locked_file(pkg, item))
    return sorted(files, key=lambda f: f.name)


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
            where = item.get("url") or item.get("path")
            if where:
                if "://" not in where:
                    where = (profile.base_dir / where).resolve().as_uri()
                urls[_filename(item)] = where
    missing = [f.filename for f in files if f.filename not in urls]
    if missing:
        raise ArtifactRejected("the configured index does not offer %s%s" % (
            missing[0], " and %d more locked files" % (len(missing) - 1) if len(missing) > 1 else ""),
            "check the index settings, or run cosybuild lock against this index")
    return urls
