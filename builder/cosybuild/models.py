"""The model half of a bundle: pin each [[models]] entry, fetch it, and turn it into artifact members.

Besides the files, the models artifact's MANIFEST.json carries, under "models", one entry
per model (its pin without the file list, plus its install "steps") and, under
"duplicates", the large files whose content another member already carries: they are
stored once and recreated on the box by cosyinstall.model_steps.
"""

from __future__ import annotations

from pathlib import Path

from cosyinstall.artifact import Duplicate, ModelRecord, ModelSteps
from cosyinstall.zipread import open_zip
from cosyinstall.errors import ArtifactRejected, CosyError, UsageError
from cosyinstall.names import check_member_name
from cosyinstall.progress import Reporter
from cosyinstall.zipwrite import Member

from cosybuild.cache import Cache
from cosybuild.lockfile import Lock
from cosybuild.profile import Model, Profile
from cosybuild.hubs.registry import get_hub

__all__ = ["pin_models", "model_members", "model_steps", "STEP_KEYS", "DEDUPE_MIN"]

# Per-model install steps a manifest may declare, with the file suffix each one takes:
#   unzip          = ["resource.zip"]   archives unpacked in place, in the directory that holds them
#   install-wheels = ["a.whl", ...]     wheels installed into the venv, offline, hash-checked
STEP_KEYS = {"unzip": ".zip", "install-wheels": ".whl"}
# Below this size a second copy costs less than the bookkeeping of a duplicate.
DEDUPE_MIN = 1024 * 1024


def model_steps(profile: Profile, model: Model) -> dict[str, list[str]]:
    """The install steps of one model, validated (exit 2 naming the manifest and key)."""
    where = "%s [[models]] %s" % (profile.path, model.name)
    unknown = sorted(set(model.extra) - set(STEP_KEYS))
    if unknown:
        raise UsageError("%s has unknown key %s" % (where, ", ".join(unknown)),
                         "the keys a model takes besides name, source, repo, revision, include and exclude are "
                         + ", ".join(sorted(STEP_KEYS)))
    steps: dict[str, list[str]] = {}
    for key, suffix in STEP_KEYS.items():
        value = model.extra.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError("%s: %s must be a list of file names" % (where, key))
        for name in value:
            try:
                check_member_name(name, where)
            except CosyError as exc:
                raise UsageError(exc.message) from None
            if not name.lower().endswith(suffix):
                raise UsageError("%s: %s names %s, which is not a %s file" % (where, key, name, suffix))
        if len(set(value)) != len(value):
            raise UsageError("%s: %s names a file twice" % (where, key))
        if value:
            steps[key] = list(value)
    return steps


def pin_models(profile: Profile) -> list[dict]:
    """Resolve every [[models]] entry through its source; the result is lock.models."""
    pins = []
    for model in profile.models:
        model_steps(profile, model)  # a typo in a step key fails the lock, not the pack
        pins.append(get_hub(model.source, profile.base_dir).pin(model))
    return pins


def _describe(pin: dict, steps: dict[str, list[str]], unpacked: dict[str, int]) -> dict:
    rest = {k: v for k, v in pin.items() if k not in ("files", "name", "steps")}
    typed = ModelSteps(tuple(steps.get("unzip", [])), tuple(steps.get("install-wheels", [])), unpacked)
    return ModelRecord(str(pin.get("name")), typed, rest).to_json()


def _unpacked_sizes(model: str, archives: list[str], paths: dict[str, Path]) -> dict[str, int]:
    """Bytes each unzip archive unpacks to, from its central directory (checked as the box will)."""
    sizes = {}
    for name in archives:
        try:
            with open_zip(str(paths[name])) as archive:
                sizes[name] = sum(info.file_size for info in archive.infolist())
        except ArtifactRejected as exc:
            # The box would refuse it in its unzip step: say so now, at pack time.
            raise ArtifactRejected("model %s: its unzip archive %s cannot be unpacked (%s)"
                                   % (model, name, exc.message.rstrip(".")),
                                   "fix the archive in the model, or drop it from the unzip step") from None
    return sizes


def _dedupe(members: list[Member]) -> tuple[list[Member], list[dict]]:
    """Keep one member per large content; the others become "duplicates" entries naming it."""
    first: dict[str, Member] = {}
    kept: list[Member] = []
    duplicates: list[dict] = []
    for member in sorted(members, key=lambda m: m.arcname):
        if member.sha256 is None or member.size < DEDUPE_MIN:
            kept.append(member)
            continue
        original = first.get(member.sha256)
        if original is None:
            first[member.sha256] = member
            kept.append(member)
        else:
            duplicates.append(Duplicate(member.arcname, original.arcname, member.size, member.sha256,
                                        member.executable).to_json())
    return kept, duplicates


def model_members(profile: Profile, lock: Lock, cache: Cache, work: Path, reporter: Reporter) -> tuple[list[Member], dict]:
    """Members `<model>/<path>` for every model, and the manifest metadata describing them."""
    pins = {p.get("name"): p for p in lock.models if isinstance(p, dict)}
    members: list[Member] = []
    described = []
    for model in profile.models:
        pin = pins.get(model.name)
        if pin is None:
            raise ArtifactRejected("the lock pins no model named %s" % model.name, "run cosybuild lock --only models --upgrade")
        steps = model_steps(profile, model)
        files = get_hub(model.source, profile.base_dir, cache).fetch(model, pin, cache, reporter)
        present = {rel for rel, _path, _exe in files}
        for key, names in steps.items():
            absent = [n for n in names if n not in present]
            if absent:
                raise UsageError("model %s: the %s step names %s, which the model does not hold"
                                 % (model.name, key, ", ".join(absent)),
                                 "fix the step or the model's include/exclude in %s" % profile.path)
        hashes = {f.get("path"): f.get("sha256") for f in pin.get("files", [])}
        for rel, path, executable in files:
            members.append(Member("%s/%s" % (model.name, rel), str(path), path.stat().st_size, hashes.get(rel), executable))
        unpacked = _unpacked_sizes(model.name, steps.get("unzip", []), {rel: path for rel, path, _x in files})
        described.append(_describe(pin, steps, unpacked))
    members, duplicates = _dedupe(members)
    meta: dict = {"models": described}
    if duplicates:
        meta["duplicates"] = duplicates
    return members, meta
