"""Planning an apply: per-step digests, and which files are written, kept or removed."""

from __future__ import annotations

from typing import Dict, Optional

from cosyinstall.artifact import ArtifactManifest, FileEntry
from cosyinstall.install_plan import (
    Item,
    app_items,
    canonical_name,
    dropped_packages,
    installed_map,
    plan_files,
    step_digest,
    venv_items,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _manifest(files: Dict[str, str], packages=None, name: str = "demo") -> ArtifactManifest:
    entries = tuple(FileEntry(p, 10, d) for p, d in sorted(files.items()))
    meta = {"packages": packages or [{"name": "six", "version": "1.16.0"}]}
    return ArtifactManifest("packages", name, {"python": "3.10"}, entries, meta)


def test_app_and_venv_digests_follow_only_their_own_files() -> None:
    base = _manifest({"app/server.py": A, "wheels/six.whl": B, "uv/uv": C})
    app_changed = _manifest({"app/server.py": C, "wheels/six.whl": B, "uv/uv": C})
    wheels_changed = _manifest({"app/server.py": A, "wheels/six.whl": C, "uv/uv": C})
    renamed = _manifest({"app/server.py": A, "wheels/six.whl": B, "uv/uv": C}, name="other")
    assert step_digest("venv", app_changed) == step_digest("venv", base)
    assert step_digest("app", app_changed) != step_digest("app", base)
    assert step_digest("app", wheels_changed) == step_digest("app", base)
    assert step_digest("venv", wheels_changed) != step_digest("venv", base)
    # The bundle's name is not content: nothing needs to be redone for it.
    assert step_digest("app", renamed) == step_digest("app", base)
    lock_changed = _manifest({"app/server.py": A, "wheels/six.whl": B, "uv/uv": C},
                             packages=[{"name": "six", "version": "1.17.0"}])
    assert step_digest("venv", lock_changed) != step_digest("venv", base)


def test_items_split_the_packages_manifest() -> None:
    m = _manifest({"app/server.py": A, "app/asset/x.json": B, "wheels/six.whl": B, "requirements.txt": C})
    assert [(i.key, i.rel) for i in app_items(m)] == [("app/asset/x.json", "asset/x.json"), ("app/server.py", "server.py")]
    assert [i.rel for i in venv_items(m)] == ["requirements.txt", "wheels/six.whl"]


def _disk(files: Dict[str, bytes]):
    import hashlib

    def size(rel: str) -> Optional[int]:
        return len(files[rel]) if rel in files else None

    def digest(rel: str) -> Optional[str]:
        return hashlib.sha256(files[rel]).hexdigest() if rel in files else None

    return size, digest


def test_unchanged_files_are_kept_changed_written_and_unlisted_removed() -> None:
    import hashlib

    same, new = b"same", b"new!"
    items = [
        Item("m/same", "m/same", 4, hashlib.sha256(same).hexdigest()),
        Item("m/changed", "m/changed", 4, hashlib.sha256(new).hexdigest()),
        Item("m/added", "m/added", 4, hashlib.sha256(new).hexdigest()),
    ]
    installed = {"m/same": (hashlib.sha256(same).hexdigest(), False), "m/changed": (A, False), "m/gone": (B, False)}
    size, digest = _disk({"m/same": same, "m/changed": b"old!", "m/gone": b"gone"})
    plan = plan_files(items, installed, size, digest, interrupted=False, old_paths=["m/same", "m/changed", "m/gone"])
    assert [i.rel for i in plan.keep] == ["m/same"]
    assert sorted(i.rel for i in plan.write) == ["m/added", "m/changed"]
    assert plan.remove == ["m/gone"]
    assert plan.write_bytes == 8


def test_a_file_whose_size_is_wrong_on_disk_is_written_whatever_the_manifest_says() -> None:
    items = [Item("x", "x", 4, A)]
    size, digest = _disk({"x": b"12345"})
    plan = plan_files(items, {"x": (A, False)}, size, digest, interrupted=False)
    assert [i.rel for i in plan.write] == ["x"]


def test_after_an_interrupted_run_the_disk_is_believed_not_the_manifest() -> None:
    import hashlib

    # The interrupted run already replaced x with its new content; y still holds old content
    # of the same size, which the old manifest would wrongly call current.
    new = b"new!"
    items = [Item("x", "x", 4, hashlib.sha256(new).hexdigest()), Item("y", "y", 4, hashlib.sha256(new).hexdigest())]
    installed = {"x": (A, False), "y": (hashlib.sha256(new).hexdigest(), False)}
    size, digest = _disk({"x": new, "y": b"old!", "z": b"left"})
    plan = plan_files(items, installed, size, digest, interrupted=True, old_paths=["x", "y", "z"])
    assert [i.rel for i in plan.keep] == ["x"]
    assert [i.rel for i in plan.write] == ["y"]
    # z was written by the interrupted run (a version that no longer lists it): removed.
    assert plan.remove == ["z"]


def test_hand_made_items_have_no_hash_and_are_always_written() -> None:
    size, digest = _disk({"x": b"data"})
    plan = plan_files([Item("x", "x", 4, None)], {"x": (None, False)}, size, digest, interrupted=False)
    assert [i.rel for i in plan.write] == ["x"]


def test_installed_map_and_dropped_packages() -> None:
    assert installed_map([Item("k", "r", 1, A, True)]) == {"r": (A, True)}
    before = [{"name": "Six"}, {"name": "idna"}, {"name": "typing_extensions"}]
    after = [{"name": "six"}, {"name": "typing-extensions"}]
    assert dropped_packages(before, after) == ["idna"]


def test_canonical_names_follow_pep_503() -> None:
    assert canonical_name("Typing_Extensions") == "typing-extensions"
    assert canonical_name("zope.interface") == "zope-interface"
    assert canonical_name("a-_.b") == "a-b"
