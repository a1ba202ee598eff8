"""JSON that may be hostile (MANIFEST.json, the journal and the other state files): bounded reading.

A document is refused before parsing when it is larger, or may hold more values, than any
real one; after parsing, when it nests deeper than any real one. So neither memory nor
recursion depends on the input: 200,000 nested lists end in one sentence, not in a
RecursionError, and a file of millions of empty lists is never turned into objects.
"""

from __future__ import annotations

import json
from typing import IO, Any, List, Tuple

__all__ = ["JsonRefused", "MAX_BYTES", "MAX_VALUES", "MAX_DEPTH", "MAX_INT_DIGITS", "loads_bounded", "read_bounded"]

# A real manifest lists a few thousand members in well under 1 MB; these bounds leave room for
# 100,000 members and keep the parsed form of the worst input within about 200 MB.
MAX_BYTES = 32 * 1024 * 1024
MAX_VALUES = 2000000
# The real documents nest 5 levels deep (manifest -> models -> steps -> list -> name).
MAX_DEPTH = 32
# Sizes are below 2**63; no integer in a real document has more digits.
MAX_INT_DIGITS = 19


class JsonRefused(ValueError):
    """The document is not JSON, or not JSON of a plausible size or shape; the message says which."""


def read_bounded(handle: IO[bytes], limit: int = MAX_BYTES) -> bytes:
    """At most `limit` bytes from `handle`; more is refused without reading it all."""
    raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise JsonRefused("it is larger than %d bytes" % limit)
    return raw


def _value_bound(raw: bytes) -> int:
    # Every value after the first in a container follows a comma, every key precedes a colon,
    # and each container has at most one value without a comma: an upper bound on the objects
    # json.loads would make, counted at C speed (characters inside strings only raise it).
    return sum(raw.count(ch) for ch in (b",", b":", b"[", b"{")) + 1


def _depth_within(data: Any, limit: int) -> bool:
    stack: List[Tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _bounded_int(digits: str) -> int:
    # int() of a long digit string is quadratic before Python 3.11 and refused after it.
    count = len(digits.lstrip("-"))
    if count > MAX_INT_DIGITS:
        raise JsonRefused("it holds a number of %d digits" % count)
    return int(digits)


def loads_bounded(raw: bytes, limit: int = MAX_BYTES, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON within the bounds, or raise JsonRefused saying in a few words why not."""
    if len(raw) > limit:
        raise JsonRefused("it is larger than %d bytes" % limit)
    if _value_bound(raw) > max_values:
        raise JsonRefused("it holds more than %d values" % max_values)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRefused("it is not UTF-8 text") from None
    try:
        data = json.loads(text, parse_int=_bounded_int)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused("it nests deeper than %d levels" % max_depth) from None
    except ValueError as exc:
        # Includes numbers too long for int() (Python 3.11+ refuses over 4,300 digits).
        raise JsonRefused("it is not valid JSON (%s)" % str(exc)[:200]) from None
    if not _depth_within(data, max_depth):
        raise JsonRefused("it nests deeper than %d levels" % max_depth)
    return data
