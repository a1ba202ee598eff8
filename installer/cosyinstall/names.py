"""Member-name safety: which paths an artifact may hold, checked before anything is written."""

from __future__ import annotations

import stat
import zipfile
from typing import Optional

__all__ = [
    "check_member_name",
    "check_member_mode",
    "check_raw_name",
    "fold",
    "legacy_name",
    "unsafe_reason",
    "PATH_MAX_BYTES",
    "DEPTH_MAX",
]

# Longest single path component most Linux filesystems accept.
_NAME_MAX = 255
# A whole member name, and its depth: the real bundle's longest names are under 300 bytes and 12
# folders deep; the limits keep a hostile name from reaching PATH_MAX under --to or exhausting
# recursion in anything that walks the tree (a 2,494-folder name once did).
PATH_MAX_BYTES = 1024
DEPTH_MAX = 128
_UTF8_FLAG = 0x800
_UNIX = 3


def unsafe_reason(name: str) -> Optional[str]:
    """Why `name` is not a plain relative POSIX path inside the tree, or None if it is."""
    if not name or name.endswith("/"):
        return "empty or a directory"
    if "\x00" in name:
        return "NUL byte"
    if "\\" in name:
        return "backslash"
    if name.startswith("/"):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":":
        return "drive letter"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "'..', '.' or empty path component"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "control character"
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in parts):
        return "a path component longer than %d bytes" % _NAME_MAX
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX_BYTES:
        return "longer than %d bytes" % PATH_MAX_BYTES
    if len(parts) > DEPTH_MAX:
        return "more than %d folders deep" % DEPTH_MAX
    return None


def check_member_name(name: str, where: str) -> None:
    """Raise ArtifactRejected unless `name` is a plain relative POSIX path inside the tree."""
    from cosyinstall.errors import ArtifactRejected

    why = unsafe_reason(name)
    if why is not None:
        raise ArtifactRejected("%s holds an unsafe member name %r (%s)" % (where, name, why))


def check_raw_name(info: zipfile.ZipInfo, where: str) -> None:
    """zipfile cuts a name at its first NUL; the name as stored must not hide one."""
    if "\x00" in info.orig_filename:
        check_member_name(info.orig_filename, where)


def check_member_mode(name: str, external_attr: int, where: str, directory: bool = False, unix: bool = True) -> None:
    """Refuse symlinks, devices, FIFOs and the like: only regular files (and directories) pass.

    The high 16 bits are a Unix mode only in zips made on Unix (`unix`); permission bits with
    no file type, as some tools write, mean a plain file.
    """
    from cosyinstall.errors import ArtifactRejected

    mode = (external_attr >> 16) & 0xFFFF
    if not unix or not stat.S_IFMT(mode):
        return
    if stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode)):
        return
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    raise ArtifactRejected(
        "%s holds %r, which is %s (mode %o); links and devices are refused" % (where, name, kind, mode)
    )


def fold(name: str) -> str:
    """Key under which two names collide on a case-insensitive disk (Windows, macOS)."""
    return name.lower()


def legacy_name(info: zipfile.ZipInfo) -> str:
    """The name a hand-made zip meant: re-decoded and with Windows separators made '/'.

    Zip writers without the UTF-8 flag store names in the machine's code page (GBK on a
    Chinese Windows) or in unflagged UTF-8; zipfile reads such names as cp437 mojibake.
    Windows tools may also write '\\' as the separator. The result still goes through
    check_member_name, so nothing unsafe is let through by this repair.
    """
    name = info.orig_filename
    if not info.flag_bits & _UTF8_FLAG and any(ord(ch) > 127 for ch in name):
        try:
            raw = name.encode("cp437")
        except UnicodeEncodeError:
            raw = b""
        if raw:
            for codec in ("utf-8", "gbk"):
                try:
                    name = raw.decode(codec)
                    break
                except UnicodeDecodeError:
                    continue
    if info.create_system != _UNIX:
        name = name.replace("\\", "/")
    return name
