"""ModelScope models through the `modelscope` client: pin a branch or tag's listing, fetch against it.

ModelScope downloads by branch or tag only, never by commit, so the revision cannot freeze
the bytes. The lock therefore records the revision together with every file's commit id,
size and sha256 from the listing; when pack has something to download it lists the
revision again and refuses, naming the files, if their content moved since the lock.
Downloads go through the client's own HTTP session (endpoint, token, cookies) with a byte
range: this module is the ModelScope transport of cosybuild.download, which resumes, hashes
and caches.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from cosyinstall.errors import ArtifactRejected, CosyError, EnvironmentUnsuitable, UsageError
from cosyinstall.names import check_member_name
from cosyinstall.progress import Reporter

from cosybuild.cache import Cache
from cosybuild.dirwalk import wanted
from cosybuild.download import Sink, Transport, Want, download_unhashed, download_verified
from cosybuild.hubs import RELOCK_HINT, RETRY_HINT, FetchedFile, pinned_files
from cosybuild.profile import Model
from cosybuild.transfererror import TransferError, Transient

if TYPE_CHECKING:  # the client is imported when first used: lock and pack without ModelScope models never load it
    from modelscope_hub import HubApi

__all__ = ["ModelScopeHub"]

REPO_TYPE = "model"
# Manifests may leave `revision` at its default ("main", Hugging Face's default branch), so
# that switching a model between hubs needs only source and repo; ModelScope's is "master".
_DEFAULT_ALIASES = {"main": "master"}
_LISTED_AT_ONCE = 5
# Network reads are this small because a read cut short loses its whole buffer, not the bytes it had.
READ = 64 * 1024


def _status(exc: BaseException) -> Optional[int]:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _client() -> HubApi:
    """A client configured from the environment as it is now (MODELSCOPE_ENDPOINT, MODELSCOPE_API_TOKEN)."""
    try:
        from modelscope_hub import HubApi, HubConfig
    except ImportError:
        raise EnvironmentUnsuitable("the installed modelscope client is too old for cosybuild",
                                    "install a modelscope release that ships modelscope_hub") from None
    return HubApi(config=HubConfig())


class ModelScopeHub:
    """A [[models]] entry with source = "modelscope"."""

    def __init__(self, cache: Optional[Cache] = None) -> None:
        self.cache = cache
        self._api: Optional[HubApi] = None
        self._api_lock = threading.Lock()

    def api(self) -> HubApi:
        with self._api_lock:
            if self._api is None:
                self._api = _client()
            return self._api

    def _where(self) -> str:
        return str(self.api().legacy.endpoint)

    @contextmanager
    def _errors(self, model: Model, what: str) -> Iterator[None]:
        """The client's exceptions as one sentence with the contract's exit code."""
        try:
            yield
        except (CosyError, Transient):
            raise
        except Exception as exc:
            status = _status(exc)
            if status in (401, 403):
                raise EnvironmentUnsuitable("model %s: %s refused access to ModelScope repo %s (HTTP %d)"
                                            % (model.name, self._where(), model.repo, status),
                                            "set MODELSCOPE_API_TOKEN to a token that may read it") from None
            if status == 404:
                raise UsageError("model %s: %s has no %s in ModelScope repo %s" % (model.name, self._where(), what, model.repo),
                                 "check repo and revision in the manifest") from None
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TransferError("model %s: cannot get %s of ModelScope repo %s from %s (%s)"
                             % (model.name, what, model.repo, self._where(), detail),
                             "check the network or proxy, or set MODELSCOPE_ENDPOINT") from None

    def _revision(self, model: Model) -> str:
        with self._errors(model, "the branches and tags"):
            branches, tags = self.api().legacy.list_revisions_detail(model.repo, REPO_TYPE)
        names = [str(x.get("Revision")) for x in list(branches) + list(tags)]
        if model.revision in names:
            return model.revision
        alias = _DEFAULT_ALIASES.get(model.revision)
        if alias in names:
            return alias
        raise UsageError("model %s: ModelScope repo %s has no branch or tag named %s (it has: %s)"
                         % (model.name, model.repo, model.revision, ", ".join(sorted(names)) or "none"),
                         "ModelScope takes a branch or tag, not a commit")

    def _listing(self, model: Model, revision: str) -> dict[str, dict]:
        """path -> the listing's raw entry (Path, Size, Sha256, Revision = the file's last commit)."""
        with self._errors(model, "the file list at %s" % revision):
            raw = self.api().legacy.list_repo_files(repo_id=model.repo, repo_type=REPO_TYPE, revision=revision, recursive=True)
        out = {}
        for entry in raw:
            if (entry.get("Type") or "blob") == "tree":
                continue
            path = str(entry.get("Path") or entry.get("Name") or "")
            if path:
                out[path] = entry
        return out

    def _transport(self, model: Model, revision: str) -> Transport:
        def get(want: Want, sink: Sink) -> None:
            import requests

            # identity: a compressed body would not line up with the byte ranges we resume at.
            headers = {"Accept-Encoding": "identity"}
            if sink.tell():
                headers["Range"] = "bytes=%d-" % sink.tell()
            with self._errors(model, want.key):
                try:
                    response = self.api().legacy.download_stream(model.repo, REPO_TYPE, want.key, revision, headers=headers)
                except Exception as exc:
                    status = _status(exc)
                    if status is None or status >= 500 or status == 429:
                        raise Transient(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
                    raise
            with response:
                if sink.tell() and response.status_code != 206:
                    sink.seek(0)
                    sink.truncate()  # the server ignored the range: take the whole file again
                try:
                    for chunk in response.iter_content(READ):
                        if chunk:
                            sink.write(chunk)
                except (requests.RequestException, OSError) as exc:
                    raise Transient(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            if sink.tell() < want.size:
                raise Transient("the connection closed after %d of %d bytes" % (sink.tell(), want.size))

        return Transport(get, RETRY_HINT, RELOCK_HINT)

    # -- the protocol ---------------------------------------------------------------------
    def pin(self, model: Model) -> dict:
        revision = self._revision(model)
        listing = self._listing(model, revision)
        chosen = sorted(p for p in listing if wanted(p, model.include, model.exclude))
        if not chosen:
            raise UsageError("model %s: no file of ModelScope repo %s at %s is left after include/exclude"
                             % (model.name, model.repo, revision))
        cache = self.cache or Cache()
        files = []
        for path in chosen:
            check_member_name(path, "ModelScope repo %s" % model.repo)
            entry = listing[path]
            size = int(entry.get("Size") or 0)
            digest = str(entry.get("Sha256") or "").lower()
            if len(digest) != 64:
                # No hash in the listing: take the bytes once now and name them by content.
                digest, _path = download_unhashed(Want("%s/%s" % (model.name, path), path, size, ""),
                                                  self._transport(model, revision), cache)
            files.append({"path": path, "size": size, "sha256": digest, "commit": str(entry.get("Revision") or "")})
        return {"name": model.name, "source": "modelscope", "repo": model.repo, "revision": revision, "files": files}

    def _check_listing(self, model: Model, revision: str, files: list[dict]) -> None:
        """Refuse, naming them, files whose content at `revision` is no longer what the lock says."""
        current = self._listing(model, revision)
        changed = []
        for f in files:
            entry = current.get(f["path"])
            if entry is None:
                changed.append("%s (gone)" % f["path"])
                continue
            size = int(entry.get("Size") or 0)
            digest = str(entry.get("Sha256") or "").lower()
            # Content decides: a new commit id with the same bytes changes nothing we ship.
            moved = digest != f["sha256"] if digest else entry.get("Revision") != f.get("commit")
            if size != f["size"] or moved:
                changed.append(f["path"])
        if changed:
            shown = ", ".join(changed[:_LISTED_AT_ONCE]) + (" and %d more" % (len(changed) - _LISTED_AT_ONCE)
                                                            if len(changed) > _LISTED_AT_ONCE else "")
            raise ArtifactRejected("model %s: ModelScope repo %s at %s no longer matches the lock: %s"
                                   % (model.name, model.repo, revision, shown),
                                   "run cosybuild lock --only models --upgrade to pin what it holds now, "
                                   "or pin a tag that does not move")

    def fetch(self, model: Model, pin: dict, cache: Cache, reporter: Reporter) -> list[FetchedFile]:
        files = pinned_files(model, pin)
        revision = str(pin.get("revision") or "")
        if not revision:
            raise ArtifactRejected("the lock pins no revision for model %s" % model.name,
                                   "run cosybuild lock --only models --upgrade")
        if any(cache.get(f["sha256"], f["size"]) is None for f in files):
            self._check_listing(model, revision, files)
        wants = [Want("%s/%s" % (model.name, f["path"]), f["path"], f["size"], f["sha256"]) for f in files]
        paths = download_verified(wants, self._transport(model, revision), cache, reporter,
                                  of="model %s" % model.name, jobs=4)
        return [(f["path"], paths[f["sha256"]], False) for f in files]
