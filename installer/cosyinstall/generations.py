"""Installed generations: build a new app root aside, then switch one symlink atomically.

Layout (tree.py names every path): `<to>` is a relative symlink to `<home>/gens/<id>`, a
complete app root (app files, `.venv`, `pretrained_models`, its records in `.cosygen`, and
`.cosyinstall` linking to the shared `<home>/state`). `generations.json` in the shared state
says, per generation, when it was made and last made current, whether it was rolled back
from, and whether it is complete; a generation folder without a complete entry is a build
that did not finish and is removed by the next apply.

- Building aside (`build_aside`): app files are copied (the app may write its own files in
  place), model files and a relocatable venv are hard-linked (every later change to them is a
  rename, never a write in place), the records copied; the install steps then run on that
  generation exactly as they would on an installed tree.
- Switching (`switch`): a new symlink is made in the state folder and renamed over `<to>`,
  then the parent folder is fsynced. A reader sees the old or the new generation, never
  neither. A real directory at `<to>` (an install made before generations, or a folder the
  user prepared) is first adopted as a generation (journaled by `adopt.json`: `recover`
  finishes an interrupted adoption).
- Removing (`prune`, `discard`): a generation is renamed into `<home>/trash` first, so a
  half-deleted one is never listed or switched to.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.journal import json_bytes, read_json_object, remove_file, write_atomic
from cosyinstall.tree import MODELS_NAME, RECORDS_NAME, STATE_NAME, VENV_NAME, InstallTree

__all__ = [
    "current", "pinned", "recover", "build_aside", "discard", "complete", "switch", "previous",
    "rollback_target", "mark_rolled_back", "prune", "listing", "relocatable", "server_generation",
    "has_generations",
]

# Legacy (pre-generation) state files that describe one install: they become its records.
_RECORD_FILES = ("state.json", "venv.json", "model-steps.json", "packages.MANIFEST.json", "models.MANIFEST.json")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the generations file ------------------------------------------------------------------


def _load(tree: InstallTree) -> Dict[str, Dict[str, Any]]:
    data = read_json_object(tree.generations_file) or {}
    gens = data.get("generations", {})
    if not isinstance(gens, dict):
        return {}
    return {k: v for k, v in gens.items() if isinstance(k, str) and isinstance(v, dict)}


def _save(tree: InstallTree, gens: Dict[str, Dict[str, Any]]) -> None:
    # "last": ids only go up, so a removed generation's number never names another one.
    last = max([_last(tree)] + [int(g) for g in gens if g.isdigit()])
    write_atomic(tree.generations_file, json_bytes({"generations": gens, "last": last}))
    _fsync_dir(tree.state)


def _update(tree: InstallTree, gen_id: str, **fields: Any) -> None:
    gens = _load(tree)
    gens.setdefault(gen_id, {}).update(fields)
    _save(tree, gens)


def _existing(tree: InstallTree) -> List[str]:
    try:
        names = os.listdir(tree.gens)
    except OSError:
        return []
    return sorted((n for n in names if n.isdigit()), key=int)


def has_generations(tree: InstallTree) -> bool:
    return os.path.islink(tree.visible) or bool(_existing(tree))


# -- the current generation ----------------------------------------------------------------


def current(tree: InstallTree) -> Optional[str]:
    """The id <to> points to, or None (nothing installed, or a pre-generation real directory)."""
    try:
        target = os.readlink(tree.visible)
    except OSError:
        return None
    gen_id = os.path.basename(target.rstrip("/"))
    return gen_id if gen_id.isdigit() and os.path.isdir(tree.generation_dir(gen_id)) else None


def pinned(tree: InstallTree) -> InstallTree:
    """The tree seen from the current generation's real folder (a server started there stays there)."""
    gen_id = current(tree)
    return tree.generation(gen_id) if gen_id is not None else tree


def server_generation(tree: InstallTree) -> Optional[str]:
    """The generation a running server was started in (its working directory), or None."""
    from cosyinstall.server_record import read_record

    record = read_record(tree)
    pid = record.get("pid") if record else None
    if not isinstance(pid, int):
        return None
    try:
        cwd = os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None
    if os.path.dirname(cwd) != os.path.realpath(tree.gens):
        return None
    return os.path.basename(cwd)


# -- recovery and adoption -----------------------------------------------------------------


def recover(tree: InstallTree) -> None:
    """Under the apply lock: finish an interrupted adoption, empty the trash, drop unfinished builds."""
    marker = read_json_object(tree.adopt_marker)
    if marker is not None and isinstance(marker.get("id"), str):
        _finish_adoption(tree, marker["id"])
    _empty_trash(tree)
    gens = _load(tree)
    cur = current(tree)
    for gen_id in _existing(tree):
        if gen_id != cur and not gens.get(gen_id, {}).get("complete"):
            discard(tree, gen_id)
    if os.path.lexists(tree.switch_link):
        remove_file(tree.switch_link)


def _adopt(tree: InstallTree) -> Optional[str]:
    """Turn a real directory at <to> into a generation; None when it held nothing worth keeping."""
    root = tree.visible
    if not os.path.isdir(root) or os.path.islink(root):
        return None
    if os.path.ismount(root):
        raise EnvironmentUnsuitable(
            "%s is a mount point, so it cannot become the link that switches generations" % root,
            "install into a folder inside it, e.g. --to %s" % os.path.join(root, "CosyVoice"))
    entries = set(os.listdir(root))
    if entries <= {STATE_NAME} and not any(
            os.path.exists(os.path.join(root, STATE_NAME, n)) for n in _RECORD_FILES):
        # Nothing installed there (an empty folder, or only a lock): nothing to keep.
        shutil.rmtree(root)
        return None
    gen_id = _next_id(tree)
    os.makedirs(tree.gens, exist_ok=True)
    write_atomic(tree.adopt_marker, json_bytes({"id": gen_id}))
    os.rename(root, tree.generation_dir(gen_id))
    _fsync_dir(os.path.dirname(root))
    _finish_adoption(tree, gen_id)
    return gen_id


def _finish_adoption(tree: InstallTree, gen_id: str) -> None:
    """Idempotent: the legacy .cosyinstall split into records and shared state, then linked."""
    gen = tree.generation(gen_id)
    if not os.path.isdir(gen.root):
        remove_file(tree.adopt_marker)
        return
    legacy = gen.state_link
    if os.path.isdir(legacy) and not os.path.islink(legacy):
        os.makedirs(gen.records, exist_ok=True)
        os.makedirs(tree.state, exist_ok=True)
        for name in os.listdir(legacy):
            src = os.path.join(legacy, name)
            if name in _RECORD_FILES or name.endswith(".pending.json"):
                os.replace(src, os.path.join(gen.records, name))
            elif name != "lock" and not os.path.lexists(tree.state_path(name)):
                os.rename(src, tree.state_path(name))
        aside = legacy + ".adopted"
        os.replace(legacy, aside)
        shutil.rmtree(aside, ignore_errors=True)
    if not os.path.lexists(legacy):
        os.symlink(os.path.relpath(tree.state, gen.root), legacy)
    shutil.rmtree(legacy + ".adopted", ignore_errors=True)
    steps = _steps_of(gen)
    _update(tree, gen_id, complete=True, adopted=True, created=_now(), steps=steps)
    if not os.path.lexists(tree.visible):
        _link(tree, gen_id)
    remove_file(tree.adopt_marker)


# -- building aside ------------------------------------------------------------------------


def _last(tree: InstallTree) -> int:
    last = (read_json_object(tree.generations_file) or {}).get("last")
    return last if isinstance(last, int) else 0


def _next_id(tree: InstallTree) -> str:
    known = [int(i) for i in list(_load(tree)) + _existing(tree) if i.isdigit()]
    return str(max(known + [_last(tree)]) + 1)


def relocatable(venv: str) -> bool:
    """True for a venv made by `uv venv --relocatable` (its launchers find python relative to themselves)."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "relocatable":
                    return value.strip().lower() == "true"
    except OSError:
        return False
    return False


def _link_tree(src: str, dst: str) -> None:
    """Hard-link every file of src into dst (links copied as links, folders made with src's modes)."""
    for dirpath, dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        out = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(out, exist_ok=True)
        shutil.copymode(dirpath, out)
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            target = os.path.join(out, name)
            if stat.S_ISLNK(info.st_mode) or stat.S_ISREG(info.st_mode):
                # A link to the symlink itself, not its target: shared like any file.
                os.link(path, target, follow_symlinks=False)
        # os.walk does not descend into links to folders; they were recreated as links above.
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]


def _copy_entry(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)


def build_aside(tree: InstallTree) -> Tuple[str, InstallTree, bool]:
    """A new generation made from the current one: (id, its tree, whether the venv was cloned).

    Call under the apply lock after `recover`. The new generation's records are the current
    one's, so the install steps see exactly what is already in place and redo only what differs;
    when the venv cannot be cloned its step is un-recorded so that it is built anew.
    """
    cur = current(tree)
    base = tree.generation(cur) if cur is not None else (tree if os.path.isdir(tree.visible) else None)
    gen_id = _next_id(tree)
    gen = tree.generation(gen_id)
    os.makedirs(tree.gens, exist_ok=True)
    os.mkdir(gen.root)
    _update(tree, gen_id, complete=False, created=_now())
    cloned = False
    if base is not None:
        for name in sorted(os.listdir(base.root)):
            src, dst = os.path.join(base.root, name), os.path.join(gen.root, name)
            if name == STATE_NAME:
                if cur is None:  # a pre-generation tree: its records are in the old state folder
                    os.makedirs(gen.records, exist_ok=True)
                    for rec in _RECORD_FILES:
                        if os.path.isfile(os.path.join(src, rec)):
                            shutil.copy2(os.path.join(src, rec), os.path.join(gen.records, rec))
                continue
            if name == RECORDS_NAME:
                shutil.copytree(src, dst)
            elif name == MODELS_NAME and not os.path.islink(src):
                # TensorRT engines and other files the server wrote there come along, as links.
                _link_tree(src, dst)
            elif name == VENV_NAME:
                if relocatable(src) and not os.path.islink(src):
                    _link_tree(src, dst)
                    cloned = True
            else:
                _copy_entry(src, dst)
    os.symlink(os.path.relpath(tree.state, gen.root), gen.state_link)
    if not cloned:
        from cosyinstall.journal import Journal

        journal = Journal(gen)
        if journal.step_done("venv") is not None:
            journal.mark("venv", None)
        remove_file(gen.venv_record)
    return gen_id, gen, cloned


def discard(tree: InstallTree, gen_id: str) -> None:
    """Remove a generation that is not current: into the trash by one rename, then deleted."""
    if gen_id == current(tree):
        return
    src = tree.generation_dir(gen_id)
    if os.path.lexists(src):
        os.makedirs(tree.trash, exist_ok=True)
        os.rename(src, os.path.join(tree.trash, "%s.%d" % (gen_id, os.getpid())))
    gens = _load(tree)
    if gens.pop(gen_id, None) is not None:
        _save(tree, gens)
    _empty_trash(tree)


def set_aside(tree: InstallTree, path: str) -> None:
    """Move `path` into the trash by one rename; the next apply's recover() deletes it.

    For scratch too large to delete on the way out (uv's cache of the unpacked wheels: tens of
    thousands of files, seconds of unlinking); its data is shared with the venv by hard links.
    """
    if os.path.lexists(path):
        os.makedirs(tree.trash, exist_ok=True)
        os.rename(path, os.path.join(tree.trash, "%s.%d.%d" % (os.path.basename(path), os.getpid(), time.time_ns())))


def _empty_trash(tree: InstallTree) -> None:
    if os.path.isdir(tree.trash):
        for name in os.listdir(tree.trash):
            path = os.path.join(tree.trash, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                remove_file(path)


def _steps_of(gen: InstallTree) -> Dict[str, str]:
    data = read_json_object(gen.journal) or {}
    steps = data.get("steps", {})
    return {k: v for k, v in steps.items() if isinstance(v, str)} if isinstance(steps, dict) else {}


def complete(tree: InstallTree, gen_id: str) -> None:
    """Record a built generation as complete (its data on disk first): only then may it become current."""
    if hasattr(os, "sync"):
        os.sync()
    _update(tree, gen_id, complete=True, steps=_steps_of(tree.generation(gen_id)))


# -- switching -----------------------------------------------------------------------------


def _link(tree: InstallTree, gen_id: str) -> None:
    link = tree.switch_link
    os.makedirs(os.path.dirname(link), exist_ok=True)
    remove_file(link)
    os.symlink(tree.link_target(gen_id), link)
    os.replace(link, tree.visible)
    _fsync_dir(os.path.dirname(tree.visible))


def switch(tree: InstallTree, gen_id: str) -> Optional[str]:
    """Make `gen_id` current in one rename; returns the generation that was current before."""
    before = current(tree)
    if before is None and os.path.lexists(tree.visible):
        before = _adopt(tree)
    if os.path.isdir(tree.visible) and not os.path.islink(tree.visible):
        raise EnvironmentUnsuitable("%s is a folder, not the link to a generation" % tree.visible,
                                    "move it away and run apply again")
    _link(tree, gen_id)
    _update(tree, gen_id, current_at=_now(), rolled_back=False)
    return before


def previous(tree: InstallTree) -> Optional[str]:
    return rollback_target(tree)


def rollback_target(tree: InstallTree) -> Optional[str]:
    """The generation that was current most recently before this one and was not rolled back from."""
    cur = current(tree)
    gens = _load(tree)
    have = set(_existing(tree))
    best: Optional[Tuple[str, int, str]] = None
    for gen_id, entry in gens.items():
        if gen_id == cur or gen_id not in have or not entry.get("complete") or entry.get("rolled_back"):
            continue
        key = (str(entry.get("current_at") or ""), int(gen_id), gen_id)
        if best is None or key > best:
            best = key
    return best[2] if best is not None else None


def mark_rolled_back(tree: InstallTree, gen_id: str) -> None:
    _update(tree, gen_id, rolled_back=True)


def prune(tree: InstallTree, keep: int) -> List[str]:
    """Remove generations beyond the `keep` most recently current; never the current one or a running server's."""
    cur = current(tree)
    gens = _load(tree)
    protected: Set[str] = {g for g in (cur, server_generation(tree)) if g is not None}
    others = [g for g in _existing(tree) if g not in protected]
    others.sort(key=lambda g: (not gens.get(g, {}).get("rolled_back"), str(gens.get(g, {}).get("current_at") or ""),
                               int(g)), reverse=True)
    room = max(keep - 1, 0)
    removed = []
    for gen_id in others[room:]:
        discard(tree, gen_id)
        removed.append(gen_id)
    return removed


# -- listing -------------------------------------------------------------------------------


def _inodes(root: str) -> Dict[Tuple[int, int], int]:
    found: Dict[Tuple[int, int], int] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[(info.st_dev, info.st_ino)] = info.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
    return found


def listing(tree: InstallTree) -> List[Dict[str, Any]]:
    """Every complete generation: id, created, last made current, step digests, unshared bytes, current."""
    cur = current(tree)
    gens = _load(tree)
    ids = [g for g in _existing(tree) if gens.get(g, {}).get("complete") or g == cur]
    files = {g: _inodes(tree.generation_dir(g)) for g in ids}
    seen: Dict[Tuple[int, int], int] = {}
    for inodes in files.values():
        for key in inodes:
            seen[key] = seen.get(key, 0) + 1
    out = []
    for gen_id in ids:
        entry = gens.get(gen_id, {})
        out.append({
            "id": int(gen_id),
            "current": gen_id == cur,
            "created": entry.get("created"),
            "current_at": entry.get("current_at"),
            "rolled_back": bool(entry.get("rolled_back")),
            "steps": _steps_of(tree.generation(gen_id)),
            "own_bytes": sum(size for key, size in files[gen_id].items() if seen[key] == 1),
            "path": tree.generation_dir(gen_id),
        })
    return out


def render(rows: List[Dict[str, Any]]) -> str:
    lines = ["  id  current  created               size       app          venv         models"]
    for row in rows:
        steps = row["steps"]
        lines.append("%4d  %-7s  %-20s  %9s  %-12s %-12s %-12s" % (
            row["id"], "*" if row["current"] else "", row["created"] or "-", _human(row["own_bytes"]),
            (steps.get("app") or "-")[:12], (steps.get("venv") or "-")[:12], (steps.get("models") or "-")[:12]))
    return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024
    return "%d B" % n


def dump(rows: List[Dict[str, Any]]) -> str:
    return json.dumps(rows, sort_keys=True)
