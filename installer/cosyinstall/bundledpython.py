"""I/O around the target CPython: unpack the bundled one into the install tree, ask an
interpreter where its libpython lies, and find a venv's libpython directory for the launcher.

The bundled CPython is a python-build-standalone style `install_only` tar.gz (top folder
`python/`), a verified member of offline_packages.zip. It is unpacked member by member with
checks of our own (no absolute names, no `..`, no link leaving the tree, no device files), so
the same code is safe on every Python from 3.8 on, with or without tarfile's filters.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tarfile
from typing import Any, Dict, Iterable, Mapping, Optional

from cosyinstall.errors import ArtifactRejected
from cosyinstall.probe import PythonFound, probe_python
from cosyinstall.python_choice import SHARED_KEY, BundledPython, Choice, bundled_from_meta, choose, libpython_name

__all__ = ["unpack_bundled", "bundled_python_exe", "probe_libdir", "libdirs_of", "venv_libpython_dir", "python_choice_for",
           "bundled_archive"]

_TOP = "python"
_STAMP = ".cosyinstall-member"
# sysconfig's LIBDIR is where the build was configured to live; a relocated CPython (the
# bundled one, unpacked anywhere) has its libpython under sys.base_prefix/lib instead.
_LIBDIR_PROBE = (
    "import os, sys, sysconfig as s\n"
    "name = s.get_config_var('INSTSONAME') or ''\n"
    "if s.get_config_var('Py_ENABLE_SHARED') and name.endswith('.so.1.0'):\n"
    "    for d in (s.get_config_var('LIBDIR') or '', os.path.join(sys.base_prefix, 'lib')):\n"
    "        if d and os.path.isfile(os.path.join(d, name)):\n"
    "            print(os.path.realpath(d)); break\n"
)


def _inside(top: str, name: str) -> Optional[str]:
    """name relative to the archive's top folder, or None if it lies outside it."""
    norm = posixpath.normpath(name)
    if norm == top:
        return ""
    if not norm.startswith(top + "/"):
        return None
    return norm[len(top) + 1:]


def _check(member: tarfile.TarInfo, rel: Optional[str], where: str) -> None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or rel is None:
        raise ArtifactRejected("%s holds %s, outside its top folder %s/" % (where, name, _TOP))
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ArtifactRejected("%s holds %s, which is neither a file, a folder nor a link" % (where, name))
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ArtifactRejected("%s holds the link %s -> %s, which leaves the CPython tree" % (where, name, target))
    if member.islnk() and _inside(_TOP, member.linkname) is None:
        raise ArtifactRejected("%s holds the hard link %s -> %s, which leaves the CPython tree" % (where, name, member.linkname))


def _extract(tar: tarfile.TarFile, dest: str, where: str) -> None:
    links = []
    for member in tar:
        rel = _inside(_TOP, member.name)
        _check(member, rel, where)
        assert rel is not None
        path = os.path.join(dest, *rel.split("/")) if rel else dest
        if member.isdir():
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            links.append((path, os.path.join(dest, *_inside(_TOP, member.linkname).split("/"))))  # type: ignore[union-attr]
        else:
            src = tar.extractfile(member)
            assert src is not None
            with src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
    for path, target in links:
        os.link(target, path)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def bundled_python_exe(home: str, bundled: BundledPython) -> str:
    return os.path.join(home, "bin", "python" + bundled.minor)


def unpack_bundled(archive: str, root: str, bundled: BundledPython) -> PythonFound:
    """Unpack the verified archive into root/<version>/ (once) and return its interpreter.

    `root` is the install tree's `bundled_python` folder; the unpacked tree is renamed into
    place only when complete, so an interrupted apply unpacks again.
    """
    home = os.path.join(root, bundled.version)
    stamp = os.path.join(home, _STAMP)
    exe = bundled_python_exe(home, bundled)
    if not (_read(stamp) == bundled.member and os.path.isfile(exe)):
        partial = home + ".partial"
        for old in (partial, home):
            if os.path.lexists(old):
                shutil.rmtree(old)
        os.makedirs(partial)
        try:
            with tarfile.open(archive, "r:*") as tar:
                _extract(tar, partial, bundled.member)
        except (tarfile.TarError, EOFError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise ArtifactRejected("%s is not a readable tar archive (%s)" % (bundled.member, exc)) from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        with open(os.path.join(partial, _STAMP), "w") as f:
            f.write(bundled.member)
        os.replace(partial, home)
    found = probe_python(exe)
    if found is None or found.minor != bundled.minor:
        raise ArtifactRejected("the bundled CPython %s from %s does not run on this box (%s)" % (bundled.version, bundled.member, exe),
                               "check the glibc floor recorded in the manifest")
    return PythonFound(exe, found.version, found.implementation)


def probe_libdir(python: str, timeout: float = 15.0) -> Optional[str]:
    """The directory holding the interpreter's libpython3.X.so.1.0, asked through its own sysconfig."""
    try:
        out = subprocess.run([python, "-I", "-c", _LIBDIR_PROBE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=timeout, universal_newlines=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def libdirs_of(pythons: Iterable[PythonFound]) -> Dict[str, Optional[str]]:
    return {p.path: probe_libdir(p.path) for p in pythons if p.implementation == "CPython"}


def venv_libpython_dir(venv: str) -> Optional[str]:
    """The libpython directory of the CPython a venv was made from (its pyvenv.cfg `home`)."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    home = ""
    version = ""
    for line in lines:
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key == "home":
            home = value
        elif key in ("version_info", "version"):
            version = value
    if not home or not version:
        return None
    minor = ".".join(version.split(".")[:2])
    libdir = os.path.join(os.path.dirname(home), "lib")
    return libdir if os.path.isfile(os.path.join(libdir, libpython_name(minor))) else None


def python_choice_for(bundle: Any, facts: Any, target: Mapping[str, Any], asked: Optional[str]) -> Choice:
    """Preflight's python decision for this upload and this box (BoxFacts from probe.gather)."""
    minor = str(target.get("python") or "") or None
    shared = bool(target.get(SHARED_KEY))
    packages = getattr(bundle, "packages", None)
    manifest = getattr(packages, "manifest", None) if packages is not None else None
    bundled = bundled_from_meta(manifest.meta) if manifest is not None else None
    libdirs = libdirs_of(facts.pythons) if shared else {}
    skipped = ""
    if facts.python_failures:
        skipped = " (skipped %d that did not run: %s)" % (len(facts.python_failures), ", ".join(facts.python_failures[:3]))
    return choose(facts.pythons, minor, asked, shared, bundled, facts.glibc, libdirs, skipped)


def bundled_archive(staging: str, bundled: BundledPython) -> str:
    """Where the venv step staged (and verified) the bundled CPython's archive."""
    return os.path.join(staging, *bundled.member.split("/"))
