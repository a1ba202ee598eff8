"""Hugging Face Hub models through `huggingface_hub`: pin a branch or tag to its commit, fetch files at it.

The client resolves the revision, lists the tree (size, and sha256 for LFS files), builds
each file's URL and performs the HTTP transfer (endpoint, token, redirects to the CDN).
cosybuild.download owns the rest: the client checks only sizes and, in recent versions,
throws away a partial file on restart, so bytes go into the engine's resumable .part and are
hashed by it; this module is the engine's Hugging Face transport.
Files kept in git (not LFS) are listed with their git oid only; lock time downloads them
once (they are small), checks the oid, and records their sha256, so the lock names every
file by content and a later pack needs the Hub only for what the cache lacks.
"""

from __future__ import annotations

import os
import re
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

if TYPE_CHECKING:  # the client is imported when first used: lock and pack without Hub models never load it
    from huggingface_hub import HfApi

__all__ = ["HuggingFaceHub"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_RETRY_STATUS = {408, 425, 429}


def _status(exc: BaseException) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


class HuggingFaceHub:
    """A [[models]] entry with source = "huggingface"."""

    def __init__(self, cache: Optional[Cache] = None) -> None:
        # Read now rather than trusting the client's import-time copy of HF_ENDPOINT.
        self.endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
        self.cache = cache

    # -- helpers --------------------------------------------------------------------------
    def _where(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    def _api(self) -> HfApi:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint)

    @staticmethod
    def _has_token() -> bool:
        from huggingface_hub import get_token

        return bool(get_token())

    def _gated(self, model: Model) -> EnvironmentUnsuitable:
        if self._has_token():
            return EnvironmentUnsuitable("model %s: Hugging Face repo %s is gated and the token in HF_TOKEN has no access to it"
                                         % (model.name, model.repo),
                                         "accept the repo's terms on its page with that account, or use another token")
        return EnvironmentUnsuitable("model %s: Hugging Face repo %s is gated and no token is set" % (model.name, model.repo),
                                     "accept its terms on its page, then set HF_TOKEN to an access token of that account")

    @contextmanager
    def _errors(self, model: Model, what: str) -> Iterator[None]:
        """Turn the client's exceptions into one sentence with the contract's exit code."""
        from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                           RepositoryNotFoundError, RevisionNotFoundError)

        try:
            yield
        except (CosyError, Transient):
            raise
        except GatedRepoError:
            raise self._gated(model) from None
        except HFValidationError:
            raise UsageError("model %s: %r is not a Hugging Face repo id" % (model.name, model.repo),
                             "write it as owner/name") from None
        except RevisionNotFoundError:
            raise UsageError("model %s: Hugging Face repo %s has no branch, tag or commit named %s"
                             % (model.name, model.repo, model.revision), "fix revision in the manifest") from None
        except RepositoryNotFoundError:
            raise UsageError("model %s: %s has no model repo %s, or it is private and HF_TOKEN gives no access"
                             % (model.name, self._where(), model.repo),
                             "check repo in the manifest, or set HF_TOKEN") from None
        except EntryNotFoundError:
            raise ArtifactRejected("model %s: Hugging Face repo %s no longer has %s" % (model.name, model.repo, what),
                                   "run cosybuild lock --only models --upgrade") from None
        except HfHubHTTPError as exc:
            status = _status(exc)
            if status in (401, 403):
                raise EnvironmentUnsuitable("model %s: %s refused access to %s (HTTP %s)"
                                            % (model.name, self._where(), model.repo, status),
                                            "set HF_TOKEN to a token that may read it") from None
            raise TransferError("model %s: %s answered HTTP %s for %s" % (model.name, self._where(), status, what),
                             "try again later or set HF_ENDPOINT to a mirror") from None
        except Exception as exc:  # the transport's own errors differ between client versions
            raise TransferError("model %s: cannot reach %s for %s (%s)" % (model.name, self._where(), what, exc),
                             "check the network or proxy, or set HF_ENDPOINT to a mirror") from None

    def _transport(self, model: Model, commit: str) -> Transport:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers, disable_progress_bars

        # Our reporter shows progress; the client's own bars would interleave with it.
        disable_progress_bars()
        # identity: a compressed body would not line up with the byte ranges we resume at.
        headers = dict(build_hf_headers(), **{"Accept-Encoding": "identity"})

        def get(want: Want, sink: Sink) -> None:
            from huggingface_hub.utils import HfHubHTTPError

            url = hf_hub_url(model.repo, want.key, revision=commit, endpoint=self.endpoint)
            with self._errors(model, want.key):
                try:
                    # The Sink offers the part of BinaryIO that http_get uses (write, tell, seek, truncate).
                    http_get(url, sink,  # type: ignore[arg-type]
                             resume_size=sink.tell(), headers=headers, expected_size=want.size,
                             displayed_filename=want.label)
                except CosyError:
                    raise
                except HfHubHTTPError as exc:
                    status = _status(exc)
                    if status is not None and (status >= 500 or status in _RETRY_STATUS):
                        raise Transient("HTTP %d" % status) from None
                    raise
                except Exception as exc:
                    # Connection drops and the client's size check: what we kept is resumed.
                    raise Transient(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

        return Transport(get, RETRY_HINT, RELOCK_HINT)

    # -- the protocol ---------------------------------------------------------------------
    def pin(self, model: Model) -> dict:
        from huggingface_hub.hf_api import RepoFile

        api = self._api()
        with self._errors(model, "revision %s" % model.revision):
            info = api.model_info(model.repo, revision=model.revision)
        commit = str(getattr(info, "sha", "") or "")
        if not _COMMIT.match(commit):
            raise ArtifactRejected("model %s: %s gave no commit for %s at %s"
                                   % (model.name, self._where(), model.repo, model.revision))
        if getattr(info, "gated", False) and not self._has_token():
            raise self._gated(model)
        with self._errors(model, "the file list at %s" % commit):
            entries = [e for e in api.list_repo_tree(model.repo, revision=commit, recursive=True) if isinstance(e, RepoFile)]
        chosen = sorted((e for e in entries if wanted(e.path, model.include, model.exclude)), key=lambda e: e.path)
        if not chosen:
            raise UsageError("model %s: no file of %s at %s is left after include/exclude" % (model.name, model.repo, commit))
        cache = self.cache or Cache()
        transport = self._transport(model, commit)
        files = []
        for entry in chosen:
            check_member_name(entry.path, "Hugging Face repo %s" % model.repo)
            label = "%s/%s" % (model.name, entry.path)
            if entry.lfs is not None:
                files.append({"path": entry.path, "size": int(entry.lfs.size),
                              "sha256": str(entry.lfs.sha256).lower(), "lfs": True})
            else:
                digest, _path = download_unhashed(Want(label, entry.path, int(entry.size), ""), transport, cache,
                                                  git_oid=entry.blob_id)
                files.append({"path": entry.path, "size": int(entry.size), "sha256": digest})
        return {"name": model.name, "source": "huggingface", "repo": model.repo, "revision": model.revision,
                "commit": commit, "files": files}

    def fetch(self, model: Model, pin: dict, cache: Cache, reporter: Reporter) -> list[FetchedFile]:
        files = pinned_files(model, pin)
        commit = str(pin.get("commit", ""))
        if not _COMMIT.match(commit):
            raise ArtifactRejected("the lock pins no commit for model %s" % model.name,
                                   "run cosybuild lock --only models --upgrade")
        wants = [Want("%s/%s" % (model.name, f["path"]), f["path"], f["size"], f["sha256"]) for f in files]
        # The client is only touched when something is missing.
        lazy: dict = {}

        def get(want: Want, sink: Sink) -> None:
            if "transport" not in lazy:
                lazy["transport"] = self._transport(model, commit)
            lazy["transport"].get(want, sink)

        paths = download_verified(wants, Transport(get, RETRY_HINT, RELOCK_HINT), cache, reporter,
                                  of="model %s" % model.name, jobs=4)
        return [(f["path"], paths[f["sha256"]], False) for f in files]
