"""Build cosyinstall.pyz from the installed cosyinstall package: stdlib only, deterministic."""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import cosyinstall

__all__ = ["build_pyz"]

SHEBANG = b"#!/usr/bin/env python3\n"
# The pyz runs the installer's own __main__.py, which any Python can parse (it names the Python needed).
MAIN_SOURCE = "__main__.py"


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_pyz(out: Path) -> Path:
    package = Path(cosyinstall.__file__).parent
    sources = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".%s.%s.part" % (out.name, uuid.uuid4().hex[:12]))
    try:
        with tmp.open("wb") as raw:
            raw.write(SHEBANG)
            with zipfile.ZipFile(raw, "w") as archive:
                archive.writestr(_info("__main__.py"), (package / MAIN_SOURCE).read_bytes())
                for src in sources:
                    arc = "cosyinstall/" + src.relative_to(package).as_posix()
                    archive.writestr(_info(arc), src.read_bytes())
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
