"""Install steps that models carry: recreate duplicate files, unzip archives in place, install wheels.

The models artifact's MANIFEST.json declares them; nothing here knows any model by name:
  "duplicates": [{"path", "same-as", "size", "sha256", "executable"}]   files stored once in the zip
  "models": [{"name", ..., "steps": {"unzip": [...], "install-wheels": [...]}}]
Step paths are relative to the model's directory. Archives are unpacked into the directory
that holds them; wheels go into the venv with the bundled uv, offline, hash-checked.
What this module creates is recorded in <to>/.cosyinstall/model-steps.json, so that a
second run changes nothing and a later bundle's run removes what it no longer produces.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from typing import Any, Dict, List, Optional, Tuple

try:
    from urllib.request import pathname2url
except ImportError:  # pragma: no cover
    from urllib import pathname2url  # type: ignore

from cosyinstall.artifact import ArtifactManifest
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.journal import StateDir
from cosyinstall.names import check_member_mode, check_member_name
from cosyinstall.progress import Reporter
from cosyinstall.streams import copy_verified, hash_file
from cosyinstall.venv import uv_env, venv_python
from cosyinstall.zipread import open_zip

__all__ = ["apply_model_steps", "STATE_NAME", "MODELS_DIR"]

MODELS_DIR = "pretrained_models"
STATE_NAME = "model-steps.json"
TMP_NAME = "model-steps.tmp"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)

# path under pretrained_models -> (size, sha256, executable) for everything the manifest promises
_Known = Dict[str, Tuple[int, str, bool]]


def apply_model_steps(to: str, models_manifest: ArtifactManifest, venv: str, uv: str, cache_dir: str,
                      reporter: Reporter) -> None:
    """Carry out the manifest's duplicates and per-model steps under <to>/pretrained_models; idempotent."""
    root = os.path.join(os.path.abspath(to), MODELS_DIR)
    state = StateDir(to)
    known = _known(models_manifest)
    record = _load(state)
    # New files are written here, then renamed into place: a killed run leaves its halves
    # here (removed now and at the end), never inside the model directories. A rename only
    # works within one filesystem, so a pretrained_models/ on another disk gets its own.
    state.ensure()
    tmp = state.path(TMP_NAME)
    if os.path.isdir(root) and os.stat(root).st_dev != os.stat(state.root).st_dev:
        tmp = os.path.join(root, "." + TMP_NAME)
    _rmtree(tmp)
    os.makedirs(tmp)
    try:
        made: Dict[str, Dict[str, Any]] = {}
        archives: Dict[str, Dict[str, Any]] = {}
        # Duplicates first: an archive or a wheel named by a step may itself be one.
        for dup in _duplicates(models_manifest):
            made[dup["path"]] = _materialize(root, tmp, dup, record.get("made", {}).get(dup["path"]), reporter)
        wheels: List[str] = []
        for model, steps in _steps(models_manifest):
            for archive in steps.get("unzip", []):
                rel = "%s/%s" % (model, archive)
                files = _unzip(root, tmp, rel, known, record.get("archives", {}).get(rel), reporter)
                archives[rel] = {"sha256": known[rel][1], "files": files}
                for path, size in files.items():
                    made[path] = {"size": size}
            wheels += ["%s/%s" % (model, w) for w in steps.get("install-wheels", [])]
        _remove_stale(root, record.get("made", {}), made, known, reporter)
        now: Dict[str, Any] = {"made": made, "archives": archives}
        if wheels:
            # A run killed inside uv may leave a wheel half installed that uv then takes as
            # present: the flag, set until uv returns, makes the next run reinstall them.
            reinstall = bool(record.get("wheels-pending"))
            _save(state, dict(now, **{"wheels-pending": True}))
            _install_wheels(root, wheels, known, venv, uv, tmp, cache_dir, reinstall, reporter)
            _save(state, now)
        elif now != {"made": record.get("made", {}), "archives": record.get("archives", {})}:
            _save(state, now)
    finally:
        _rmtree(tmp)


# -- the manifest -----------------------------------------------------------------------

def _known(manifest: ArtifactManifest) -> _Known:
    known = {e.path: (e.size, e.sha256, e.executable) for e in manifest.files}
    for dup in _duplicates(manifest):
        known[dup["path"]] = (dup["size"], dup["sha256"], dup["executable"])
    return known


def _duplicates(manifest: ArtifactManifest) -> List[Dict[str, Any]]:
    raw = manifest.meta.get("duplicates", [])
    where = "%s duplicates" % manifest.name
    if not isinstance(raw, list):
        raise ArtifactRejected("%s must be a list" % where)
    members = manifest.by_path()
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise ArtifactRejected("%s holds %r, which is not an object" % (where, item))
        path, same = item.get("path"), item.get("same-as")
        size, digest = item.get("size"), item.get("sha256")
        if not isinstance(path, str) or not isinstance(same, str) or not isinstance(size, int) \
                or not isinstance(digest, str):
            raise ArtifactRejected("%s holds a malformed entry %r" % (where, item))
        check_member_name(path, where)
        original = members.get(same)
        if original is None or original.sha256 != digest or original.size != size:
            raise ArtifactRejected("%s: %s names %s, which the manifest does not list with that content"
                                   % (where, path, same))
        if path in members:
            raise ArtifactRejected("%s: %s is also a member" % (where, path))
        out.append({"path": path, "same-as": same, "size": size, "sha256": digest,
                    "executable": bool(item.get("executable", False))})
    return out


def _steps(manifest: ArtifactManifest) -> List[Tuple[str, Dict[str, List[str]]]]:
    models = manifest.meta.get("models", [])
    if not isinstance(models, list):
        raise ArtifactRejected("%s models must be a list" % manifest.name)
    out = []
    for model in models:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise ArtifactRejected("%s models holds a malformed entry" % manifest.name)
        name = model["name"]
        check_member_name(name, "%s models" % manifest.name)
        raw = model.get("steps") or {}
        steps: Dict[str, List[str]] = {}
        for key in ("unzip", "install-wheels"):
            value = raw.get(key, []) if isinstance(raw, dict) else None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ArtifactRejected("model %s: steps.%s must be a list of file names" % (name, key))
            for item in value:
                check_member_name(item, "model %s steps" % name)
            steps[key] = list(value)
        out.append((name, steps))
    return out


# -- state ------------------------------------------------------------------------------

def _load(state: StateDir) -> Dict[str, Any]:
    raw = state.read_bytes(STATE_NAME)
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}  # damaged: everything is redone, which is safe
    return data if isinstance(data, dict) else {}


def _save(state: StateDir, data: Dict[str, Any]) -> None:
    state.write_json(STATE_NAME, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


# -- files ------------------------------------------------------------------------------

def _inside(root: str, rel: str) -> str:
    target = os.path.normpath(os.path.join(root, rel))
    if os.path.commonpath([root, target]) != root:
        raise ArtifactRejected("refusing to write %s outside %s" % (rel, root))
    return target


def _rmtree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _write_atomically(target: str, tmp: str, write: Any, executable: bool) -> None:
    """Write a temp file in `tmp` (same filesystem), then rename: `target` is the old file or the whole new one."""
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ArtifactRejected("cannot create %s (%s)" % (parent, exc.strerror or exc)) from None
    if os.path.isdir(target) and not os.path.islink(target):
        raise ArtifactRejected("%s is a directory where a file belongs" % target)
    fd, part = tempfile.mkstemp(prefix="file.", dir=tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(part, 0o755 if executable else 0o644)
        os.replace(part, target)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise


def _materialize(root: str, tmp: str, dup: Dict[str, Any], before: Optional[Dict[str, Any]],
                 reporter: Reporter) -> Dict[str, Any]:
    """Copy a duplicate from the member holding its content, verified; skip it if it is already there."""
    target = _inside(root, dup["path"])
    source = _inside(root, dup["same-as"])
    if before and before.get("sha256") == dup["sha256"] and os.path.isfile(target):
        st = os.stat(target)
        if st.st_size == dup["size"] and st.st_mtime_ns == before.get("mtime_ns"):
            return before
    with reporter.task("copying %s" % dup["path"], dup["size"]) as task:
        try:
            with open(source, "rb") as src:
                _write_atomically(target, tmp, lambda out: copy_verified(src, out, dup["size"], dup["sha256"], source,
                                                                    task.advance), dup["executable"])
        except FileNotFoundError:
            raise ArtifactRejected("%s is missing, so its duplicate %s cannot be made" % (source, dup["path"]),
                                   "run apply again") from None
    return {"size": dup["size"], "sha256": dup["sha256"], "mtime_ns": os.stat(target).st_mtime_ns}


def _unzip(root: str, tmp: str, rel: str, known: _Known, before: Optional[Dict[str, Any]], reporter: Reporter) -> Dict[str, int]:
    """Unpack the archive `rel` into its own directory; returns the files it produced (path -> size)."""
    if rel not in known:
        raise ArtifactRejected("the models manifest asks to unzip %s but does not list it" % rel)
    size, digest, _exe = known[rel]
    path = _inside(root, rel)
    if before and before.get("sha256") == digest and isinstance(before.get("files"), dict) and all(
            os.path.isfile(_inside(root, p)) and os.path.getsize(_inside(root, p)) == n for p, n in before["files"].items()):
        return dict(before["files"])
    if not os.path.isfile(path):
        raise ArtifactRejected("%s is missing" % path, "run apply again to extract the models")
    actual_size, actual = hash_file(path)
    if actual_size != size or actual != digest:
        raise ArtifactRejected("%s differs from its manifest" % path, "run apply again to extract the models")
    base = posixpath.dirname(rel)
    produced: Dict[str, int] = {}
    try:
        with open_zip(path) as archive:  # zipcheck: the same checks as the artifacts
            infos = archive.infolist()
            with reporter.task("unzipping %s" % rel, sum(i.file_size for i in infos)) as task:
                for info in infos:
                    name = info.filename
                    if "\x00" in info.orig_filename:
                        check_member_name(info.orig_filename, path)
                    if name.endswith("/"):
                        check_member_name(name.rstrip("/"), path)
                        continue
                    check_member_name(name, path)
                    check_member_mode(name, info.external_attr, path)
                    if info.flag_bits & 0x1:
                        raise ArtifactRejected("%s holds %s encrypted, which cannot be unpacked" % (path, name))
                    out_rel = posixpath.join(base, name) if base else name
                    if out_rel in produced:
                        raise ArtifactRejected("%s holds %s twice" % (path, name))
                    if out_rel in known:
                        # The artifact's own files are verified members; an archive may not overwrite them.
                        raise ArtifactRejected("%s holds %s, which would overwrite the model file %s" % (path, name, out_rel))
                    _extract_member(archive, info, _inside(root, out_rel), tmp, "%s in %s" % (name, path), task.advance)
                    produced[out_rel] = info.file_size
    except _ZIP_ERRORS as exc:
        raise ArtifactRejected("%s cannot be unpacked (%s)" % (path, exc), "its bytes match the manifest, so the archive "
                               "itself is broken; rebuild the bundle") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise EnvironmentUnsuitable("the disk filled up while unpacking %s" % path,
                                        "free some space and run apply again") from None
        raise
    reporter.info("unzipped %s: %d files" % (rel, len(produced)))
    return produced


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: str, tmp: str, what: str,
                    advance: Any) -> None:
    """One archive member to `target`, streamed, bounded by its declared size; zipfile checks its CRC."""
    executable = bool((info.external_attr >> 16) & 0o111)
    with archive.open(info) as src:
        _write_atomically(target, tmp, lambda out: copy_verified(src, out, info.file_size, None, what, advance),
                          executable)


def _remove_stale(root: str, before: Dict[str, Any], now: Dict[str, Any], known: _Known, reporter: Reporter) -> None:
    """Delete files an earlier run made that this bundle no longer makes (never the artifact's own members)."""
    removed = 0
    for rel in sorted(set(before) - set(now)):
        if rel in known:
            continue  # now a member of the artifact: extraction owns it
        target = _inside(root, rel)
        if os.path.isfile(target) or os.path.islink(target):
            os.unlink(target)
            removed += 1
            parent = os.path.dirname(target)
            while parent != root and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
                parent = os.path.dirname(parent)
    if removed:
        reporter.info("removed %d file%s that the models no longer produce" % (removed, "" if removed == 1 else "s"))


# -- wheels -----------------------------------------------------------------------------

def _install_wheels(root: str, wheels: List[str], known: _Known, venv: str, uv: str, tmp: str, cache_dir: str,
                    reinstall: bool, reporter: Reporter) -> None:
    """`uv pip install --no-index --require-hashes --no-deps` of exactly these files, hashes from the manifest."""
    lines: List[str] = []
    names: List[str] = []
    for rel in wheels:
        if rel not in known:
            raise ArtifactRejected("the models manifest asks to install %s but does not list it" % rel)
        path = _inside(root, rel)
        if not os.path.isfile(path):
            raise ArtifactRejected("%s is missing" % path, "run apply again to extract the models")
        name = posixpath.basename(rel).split("-", 1)[0]
        names.append(name)
        lines.append("%s @ file://%s --hash=sha256:%s\n" % (name, pathname2url(path), known[rel][1]))
    os.makedirs(cache_dir, exist_ok=True)
    fd, requirements = tempfile.mkstemp(prefix="model-wheels.", suffix=".txt", dir=tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        # --no-deps: a model wheel's dependencies belong in the bundle's locked package set, which
        # is already installed; with them unlisted here, --require-hashes would refuse the wheel.
        argv = [uv, "pip", "install", "--python", venv_python(venv), "--no-index", "--require-hashes", "--no-deps",
                "--requirement", requirements]
        for name in names if reinstall else []:
            argv += ["--reinstall-package", name]
        _uv(argv, cache_dir, "installing the model wheels", reporter)
    finally:
        os.unlink(requirements)
    check = _uv([uv, "pip", "check", "--python", venv_python(venv)], cache_dir, "checking the venv", reporter,
                fail=False)
    if check:
        reporter.warn("after installing the model wheels, uv pip check reports: %s" % check)
    reporter.info("model wheels installed: %s" % ", ".join(posixpath.basename(w) for w in wheels))


def _uv(argv: List[str], cache_dir: str, what: str, reporter: Reporter, fail: bool = True) -> str:
    """Run the bundled uv offline; returns "" on success, else its last lines (or raises, with `fail`)."""
    try:
        proc = subprocess.run(argv, env=uv_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise EnvironmentUnsuitable("cannot run %s (%s)" % (argv[0], exc.strerror or exc),
                                    "run apply again to restore the bundled uv") from None
    output = proc.stdout.decode("utf-8", "replace").strip()
    if output and reporter.log is not None:
        reporter.log.write(output + "\n")
        reporter.log.flush()
    if proc.returncode == 0:
        return ""
    last = " / ".join([line.strip() for line in output.splitlines() if line.strip()][-3:]) or "no output"
    if not fail:
        return last
    raise ArtifactRejected("%s failed (uv exit %d): %s" % (what, proc.returncode, last),
                           "see .cosyinstall/install.log for uv's full output")
