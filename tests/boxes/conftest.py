"""Fixtures for tests that run the installer inside Debian box images (tests/boximages.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

from boximages import Box, image, missing_tools


@pytest.fixture(scope="session")
def box_tools() -> None:
    missing = missing_tools()
    if missing:
        # Boxes need root, debootstrap and util-linux; `.ci/run` installs them on CI.
        pytest.skip("box images need %s on this machine" % ", ".join(missing))


@pytest.fixture(scope="session")
def bullseye(box_tools) -> Path:
    """Debian bullseye rootfs (glibc 2.31, python3.9): built once, then cached between runs."""
    return image("bullseye")


@pytest.fixture(scope="session")
def bookworm(box_tools) -> Path:
    """Debian bookworm rootfs (glibc 2.36, python3.11, no 3.10): built once, then cached."""
    return image("bookworm")


@pytest.fixture
def make_box(tmp_path: Path, box_tools) -> Callable[..., Box]:
    """make_box(suite, binds={host: inside}) -> an entered Box, left when the test ends."""
    boxes = []

    def make(suite: str, binds: Optional[Dict[str, str]] = None) -> Box:
        box = Box(suite, tmp_path / ("box-%s-%d" % (suite, len(boxes))), binds).__enter__()
        boxes.append(box)
        return box

    yield make
    for box in reversed(boxes):
        box.__exit__(None, None, None)
        shutil.rmtree(box.scratch, ignore_errors=True)
