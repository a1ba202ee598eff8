"""Where the uploads are: the --from folder, its default, one level down, and near-miss names.

Without --from, the folder holding the running pyz is used when it holds uploads (the user
uploaded everything into one folder and ran the pyz from there), else /root/autodl-tmp. A
folder without uploads is searched one level down: a default --from moves into the one
subfolder that holds them; an explicit one is refused, naming that subfolder. Files whose names
are close to an upload's (`offline_packages (1).zip`, a browser's rename; a `.part` left by a
download) are named with the rename that fixes them.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import List, Optional, Tuple

from cosyinstall.artifact import KIND_OF, SUMS_NAME
from cosyinstall.errors import ArtifactRejected

__all__ = ["DEFAULT_FROM", "pyz_folder", "holds_uploads", "near_matches", "locate_uploads"]

DEFAULT_FROM = "/root/autodl-tmp"
_NAMES = tuple(KIND_OF) + (SUMS_NAME,)


def pyz_folder(argv0: Optional[str] = None) -> Optional[str]:
    """The folder of the pyz this process runs from, or None when not run from a pyz."""
    path = sys.argv[0] if argv0 is None else argv0
    if not path or not os.path.isfile(path) or os.path.basename(path) == "__main__.py":
        return None
    if not path.endswith(".pyz"):
        return None
    return os.path.dirname(os.path.abspath(path))


def holds_uploads(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in _NAMES)


def _listing(folder: str) -> List[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _subfolders_with_uploads(folder: str) -> List[str]:
    found = []
    for name in _listing(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and holds_uploads(path):
            found.append(path)
    return found


def _meant(name: str) -> Optional[str]:
    """The upload a file name was probably meant to be, or None."""
    if name in _NAMES:
        return None
    simple = name.lower().replace(" ", "").replace("-", "_")
    for upload in _NAMES:
        stem = upload.split(".")[0].lower()
        if simple.startswith(stem) and (simple.endswith(".zip") or upload == SUMS_NAME
                                        or simple.endswith((".part", ".crdownload", ".tmp"))):
            return upload
    close = difflib.get_close_matches(name, _NAMES, n=1, cutoff=0.8)
    return close[0] if close else None


def near_matches(folder: str) -> List[Tuple[str, str]]:
    """(path found, upload name it should have) in `folder` and one level down."""
    pairs = []
    for name in _listing(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            pairs += [(os.path.join(path, sub), meant) for sub, meant in
                      ((s, _meant(s)) for s in _listing(path)) if meant and os.path.isfile(os.path.join(path, sub))]
        elif os.path.isfile(path):
            meant = _meant(name)
            if meant:
                pairs.append((path, meant))
    return pairs


def locate_uploads(from_dir: Optional[str], argv0: Optional[str] = None) -> Tuple[str, str]:
    """(the folder to read the uploads from, a note saying how it was chosen, or "")."""
    if from_dir is None:
        here = pyz_folder(argv0)
        if here is not None and holds_uploads(here):
            return here, "the uploads are read from %s, the folder holding the pyz" % here
        folder = DEFAULT_FROM
    else:
        folder = from_dir
    if not os.path.isdir(folder):
        return folder, ""  # the scan names the missing folder
    near = [(p, m) for p, m in near_matches(folder) if not os.path.isfile(os.path.join(folder, m))]
    if holds_uploads(folder):
        listed = _listed(folder)
        for path, meant in near:
            if os.path.dirname(path) == folder and meant in listed:
                raise ArtifactRejected("%s is missing, but %s looks like it" % (os.path.join(folder, meant), path),
                                       "rename it to %s" % meant)
        return folder, ""
    below = _subfolders_with_uploads(folder)
    if from_dir is None and len(below) == 1:
        return below[0], "the uploads are read from %s, one level below %s" % (below[0], folder)
    if near:
        path, meant = near[0]
        raise ArtifactRejected("%s holds no uploads, but %s looks like %s" % (folder, path, meant),
                               "rename it to %s" % os.path.join(os.path.dirname(path), meant))
    if below:
        raise ArtifactRejected("%s holds no uploads, but %s does" % (folder, ", ".join(below)),
                               "pass --from %s" % below[0])
    return folder, ""


def _listed(folder: str) -> List[str]:
    """Names SHA256SUMS lists (read loosely: a broken file is the scan's to report)."""
    names: List[str] = []
    try:
        with open(os.path.join(folder, SUMS_NAME), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and not line.startswith("#"):
                    names.append(parts[1].lstrip("*"))
    except OSError:
        pass
    return names
