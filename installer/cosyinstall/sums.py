"""SHA256SUMS in `sha256sum -c` format: parse and format.

Each file also gets a `# size <bytes> <name>` comment line: `sha256sum -c` skips comments,
and the size lets a truncated upload be reported with expected and actual size at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import IO, Dict, Iterable, Iterator, Optional, Tuple

from cosyinstall.artifact import SUMS_NAME
from cosyinstall.errors import ArtifactRejected

__all__ = ["SUMS_NAME", "SumEntry", "parse_sums", "format_sums", "read_sums"]

_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_SIZE = re.compile(r"^# size (\d+) (.+)$")
# An upload folder holds a handful of files: these bounds are far above any real SHA256SUMS.
MAX_BYTES = 1024 * 1024
MAX_LINE = 4096
_SIZE_DIGITS = 19


@dataclass(frozen=True)
class SumEntry:
    sha256: str
    size: Optional[int] = None


def _plain_name(name: str, where: str, number: int) -> None:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ArtifactRejected("%s line %d names %r, which is not a plain file name" % (where, number, name))


def parse_sums(text: str, where: str = SUMS_NAME) -> Dict[str, SumEntry]:
    return _parse_lines(text.splitlines(), where)


def _parse_lines(lines: Iterable[str], where: str) -> Dict[str, SumEntry]:
    digests: Dict[str, str] = {}
    sizes: Dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        size_match = _SIZE.match(line)
        if size_match:
            digits = size_match.group(1)
            if len(digits) > _SIZE_DIGITS:
                raise ArtifactRejected("%s line %d gives a size of %d digits, which no file has"
                                       % (where, number, len(digits)))
            sizes[size_match.group(2)] = int(digits)
            continue
        if line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ArtifactRejected("%s line %d is not in sha256sum format" % (where, number))
        name = match.group(2)
        _plain_name(name, where, number)
        if name in digests:
            raise ArtifactRejected("%s lists %s twice" % (where, name))
        digests[name] = match.group(1).lower()
    return {name: SumEntry(digest, sizes.get(name)) for name, digest in digests.items()}


def format_sums(items: Iterable[Tuple[str, str, int]]) -> str:
    """items: (file name, sha256, size)."""
    lines = []
    for name, digest, size in sorted(items):
        lines.append("# size %d %s\n" % (size, name))
        lines.append("%s  %s\n" % (digest, name))
    return "".join(lines)


def _bounded_lines(handle: IO[bytes], where: str) -> Iterator[str]:
    """Lines of at most MAX_LINE bytes, MAX_BYTES in all: a hostile file is refused, never held."""
    total = 0
    while True:
        raw = handle.readline(MAX_LINE + 1)
        if not raw:
            return
        total += len(raw)
        if len(raw) > MAX_LINE:
            raise ArtifactRejected("%s has a line longer than %d bytes, which no checksum line needs" % (where, MAX_LINE))
        if total > MAX_BYTES:
            raise ArtifactRejected("%s is larger than %d bytes, far more than a few files' checksums" % (where, MAX_BYTES))
        yield raw.decode("utf-8")


def read_sums(directory: str) -> Dict[str, SumEntry]:
    path = os.path.join(directory, SUMS_NAME)
    try:
        with open(path, "rb") as handle:
            return _parse_lines(_bounded_lines(handle, path), path)
    except FileNotFoundError:
        raise ArtifactRejected("%s is missing" % path, "upload it next to the zips") from None
    except UnicodeDecodeError:
        raise ArtifactRejected("%s is not a text file" % path) from None
    except OSError as exc:
        raise ArtifactRejected("%s cannot be read (%s)" % (path, exc.strerror or exc), "upload it again") from None
