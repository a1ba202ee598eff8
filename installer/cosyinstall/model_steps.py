"""Install steps that models carry: recreate duplicate files, unzip archives in place, install wheels.

The models artifact's MANIFEST.json declares them (artifact.ModelsMeta); nothing here knows
any model by name. Step paths are relative to the model's directory. Archives are unpacked
into the directory that holds them; wheels go into the venv with the bundled uv (venv.Uv),
offline, hash-checked. What this module creates is recorded in
<to>/.cosyinstall/model-steps.json, so that a second run changes nothing and a later
bundle's run removes what it no longer produces.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import zipfile
import zlib
from typing import Any, Callable, Dict, List, Optional

try:
    from urllib.request import pathname2url
except ImportError:  # pragma: no cover
    from urllib import pathname2url  # type: ignore

from cosyinstall.artifact import ArtifactManifest, Duplicate, FileEntry
from cosyinstall.errors import ArtifactRejected, DiskFull, is_disk_full
from cosyinstall.extract import inside, remove_paths, rmtree, write_atomically
from cosyinstall.journal import json_bytes, read_json_object, write_atomic
from cosyinstall.names import check_member_mode, check_member_name
from cosyinstall.progress import Reporter
from cosyinstall.streams import copy_verified, hash_file
from cosyinstall.tree import InstallTree
from cosyinstall.venv import Uv
from cosyinstall.zipcheck import CheckedZip
from cosyinstall.zipread import open_zip

__all__ = ["apply_model_steps"]

_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)

# path under pretrained_models -> the entry the manifest promises for it (members and duplicates)
_Known = Dict[str, FileEntry]


def apply_model_steps(tree: InstallTree, models_manifest: ArtifactManifest, uv: Uv, reporter: Reporter) -> None:
    """Carry out the manifest's duplicates and per-model steps under <to>/pretrained_models; idempotent."""
    root = tree.models
    meta = models_manifest.models_meta()
    known = meta.known(models_manifest)
    record = _read_record(tree.model_steps_record)
    # New files are written here, then renamed into place: a killed run leaves its halves
    # here (removed now and at the end), never inside the model directories. A rename only
    # works within one filesystem, so a pretrained_models/ on another disk gets its own.
    os.makedirs(tree.state, exist_ok=True)
    tmp = tree.model_steps_tmp
    if os.path.isdir(root) and os.stat(root).st_dev != os.stat(tree.state).st_dev:
        tmp = tree.model_steps_tmp_in_models
    rmtree(tmp)
    os.makedirs(tmp)
    try:
        made: Dict[str, Dict[str, Any]] = {}
        archives: Dict[str, Dict[str, Any]] = {}
        # Duplicates first: an archive or a wheel named by a step may itself be one.
        for dup in meta.duplicates:
            made[dup.path] = _materialize(root, tmp, dup, record.get("made", {}).get(dup.path), reporter)
        wheels: List[str] = []
        for model in meta.models:
            for archive in model.steps.unzip:
                rel = "%s/%s" % (model.name, archive)
                files = _unzip(root, tmp, rel, known, record.get("archives", {}).get(rel), reporter)
                archives[rel] = {"sha256": known[rel].sha256, "files": files}
                for path, size in files.items():
                    made[path] = {"size": size}
            wheels += ["%s/%s" % (model.name, w) for w in model.steps.install_wheels]
        _remove_stale(root, record.get("made", {}), made, known, reporter)
        now: Dict[str, Any] = {"made": made, "archives": archives}
        if wheels:
            # A run killed inside uv may leave a wheel half installed that uv then takes as
            # present: the flag, set until uv returns, makes the next run reinstall them.
            reinstall = bool(record.get("wheels-pending"))
            write_atomic(tree.model_steps_record, json_bytes(dict(now, **{"wheels-pending": True})))
            _install_wheels(tree, root, wheels, known, uv, tmp, reinstall, reporter)
            write_atomic(tree.model_steps_record, json_bytes(now))
        elif now != {"made": record.get("made", {}), "archives": record.get("archives", {})}:
            write_atomic(tree.model_steps_record, json_bytes(now))
    finally:
        rmtree(tmp)


# -- files ------------------------------------------------------------------------------

def _read_record(path: str) -> Dict[str, Any]:
    """The last run's record; parts of the wrong shape are damage, read as "not made" (so redone)."""
    record = read_json_object(path) or {}
    out: Dict[str, Any] = {}
    for key in ("made", "archives"):
        part = record.get(key)
        out[key] = {k: v for k, v in part.items() if isinstance(v, dict)} if isinstance(part, dict) else {}
    if record.get("wheels-pending"):
        out["wheels-pending"] = True
    return out


def _write(target: str, tmp: str, write: Callable[[Any], Any], executable: bool) -> None:
    """write_atomically, with a directory in the way or an uncreatable parent named."""
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(parent) from None
        raise ArtifactRejected("cannot create %s (%s)" % (parent, exc.strerror or exc)) from None
    if os.path.isdir(target) and not os.path.islink(target):
        raise ArtifactRejected("%s is a directory where a file belongs" % target)
    write_atomically(target, tmp, write, executable)


def _materialize(root: str, tmp: str, dup: Duplicate, before: Optional[Dict[str, Any]],
                 reporter: Reporter) -> Dict[str, Any]:
    """Copy a duplicate from the member holding its content, verified; skip it if it is already there."""
    target = inside(root, dup.path)
    source = inside(root, dup.same_as)
    if before and before.get("sha256") == dup.sha256 and os.path.isfile(target):
        st = os.stat(target)
        if st.st_size == dup.size and st.st_mtime_ns == before.get("mtime_ns"):
            return before
    with reporter.task("copying %s" % dup.path, dup.size) as task:
        try:
            with open(source, "rb") as src:
                _write(target, tmp, lambda out: copy_verified(src, out, dup.size, dup.sha256, source, task.advance),
                       dup.executable)
        except FileNotFoundError:
            raise ArtifactRejected("%s is missing, so its duplicate %s cannot be made" % (source, dup.path),
                                   "run apply again") from None
    return {"size": dup.size, "sha256": dup.sha256, "mtime_ns": os.stat(target).st_mtime_ns}


def _unchanged(root: str, digest: str, before: Optional[Dict[str, Any]]) -> bool:
    """The archive was unpacked before from the same bytes and every file it produced is still there."""
    if not before or before.get("sha256") != digest or not isinstance(before.get("files"), dict):
        return False
    return all(os.path.isfile(inside(root, p)) and os.path.getsize(inside(root, p)) == n
               for p, n in before["files"].items())


def _unzip(root: str, tmp: str, rel: str, known: _Known, before: Optional[Dict[str, Any]], reporter: Reporter) -> Dict[str, int]:
    """Unpack the archive `rel` into its own directory; returns the files it produced (path -> size)."""
    if rel not in known:
        raise ArtifactRejected("the models manifest asks to unzip %s but does not list it" % rel)
    entry = known[rel]
    path = inside(root, rel)
    if _unchanged(root, entry.sha256, before):
        return dict(before["files"])  # type: ignore[index]
    if not os.path.isfile(path):
        raise ArtifactRejected("%s is missing" % path, "run apply again to extract the models")
    actual_size, actual = hash_file(path)
    if actual_size != entry.size or actual != entry.sha256:
        raise ArtifactRejected("%s differs from its manifest" % path, "run apply again to extract the models")
    base = posixpath.dirname(rel)
    produced: Dict[str, int] = {}
    try:
        with open_zip(path) as archive:  # the same structural checks as the artifacts
            infos = archive.infolist()
            with reporter.task("unzipping %s" % rel, sum(i.file_size for i in infos)) as task:
                for info in infos:
                    out_rel = _member_target(info, path, base)
                    if out_rel is None:
                        continue
                    if out_rel in produced:
                        raise ArtifactRejected("%s holds %s twice" % (path, info.filename))
                    if out_rel in known:
                        # The artifact's own files are verified members; an archive may not overwrite them.
                        raise ArtifactRejected("%s holds %s, which would overwrite the model file %s"
                                               % (path, info.filename, out_rel))
                    _extract_member(archive, info, inside(root, out_rel), tmp, "%s in %s" % (info.filename, path),
                                    task.advance)
                    produced[out_rel] = info.file_size
    except _ZIP_ERRORS as exc:
        raise ArtifactRejected("%s cannot be unpacked (%s)" % (path, exc), "its bytes match the manifest, so the archive "
                               "itself is broken; rebuild the bundle") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(during="unpacking %s" % path) from None
        raise
    reporter.info("unzipped %s: %d files" % (rel, len(produced)))
    return produced


def _member_target(info: zipfile.ZipInfo, path: str, base: str) -> Optional[str]:
    """Where an archive member goes under pretrained_models (None for a directory entry); unsafe names refused."""
    name = info.filename
    if "\x00" in info.orig_filename:
        check_member_name(info.orig_filename, path)
    if name.endswith("/"):
        check_member_name(name.rstrip("/"), path)
        return None
    check_member_name(name, path)
    check_member_mode(name, info.external_attr, path)
    if info.flag_bits & 0x1:
        raise ArtifactRejected("%s holds %s encrypted, which cannot be unpacked" % (path, name))
    return posixpath.join(base, name) if base else name


def _extract_member(archive: CheckedZip, info: zipfile.ZipInfo, target: str, tmp: str, what: str,
                    advance: Any) -> None:
    """One archive member to `target`, streamed, bounded by its declared size; zipfile checks its CRC."""
    executable = bool((info.external_attr >> 16) & 0o111)
    with archive.open(info) as src:
        _write(target, tmp, lambda out: copy_verified(src, out, info.file_size, None, what, advance), executable)


def _remove_stale(root: str, before: Dict[str, Any], now: Dict[str, Any], known: _Known, reporter: Reporter) -> None:
    """Delete files an earlier run made that this bundle no longer makes (never the artifact's own members)."""
    stale = [rel for rel in set(before) - set(now) if rel not in known]  # a member now: extraction owns it
    removed = remove_paths(root, stale)
    if removed:
        reporter.info("removed %d file%s that the models no longer produce" % (len(removed), "" if len(removed) == 1 else "s"))


# -- wheels -----------------------------------------------------------------------------

def _install_wheels(tree: InstallTree, root: str, wheels: List[str], known: _Known, uv: Uv, tmp: str,
                    reinstall: bool, reporter: Reporter) -> None:
    """`uv pip install --no-index --require-hashes --no-deps` of exactly these files, hashes from the manifest."""
    lines: List[str] = []
    names: List[str] = []
    for rel in wheels:
        if rel not in known:
            raise ArtifactRejected("the models manifest asks to install %s but does not list it" % rel)
        path = inside(root, rel)
        if not os.path.isfile(path):
            raise ArtifactRejected("%s is missing" % path, "run apply again to extract the models")
        name = posixpath.basename(rel).split("-", 1)[0]
        names.append(name)
        lines.append("%s @ file://%s --hash=sha256:%s\n" % (name, pathname2url(path), known[rel].sha256))
    fd, requirements = tempfile.mkstemp(prefix="model-wheels.", suffix=".txt", dir=tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        uv.install_exact(tree, requirements, names if reinstall else [])
    finally:
        os.unlink(requirements)
    check = uv.check(tree)
    if check:
        reporter.warn("after installing the model wheels, uv pip check reports: %s" % check)
    reporter.info("model wheels installed: %s" % ", ".join(posixpath.basename(w) for w in wheels))
