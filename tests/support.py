"""Shared test helpers: find interpreters at run time, run commands offline, pack the demo."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Optional

REPO = Path(__file__).resolve().parents[1]
PYZ = "cosyinstall.pyz"


def find_python(minor: str) -> str | None:
    """A CPython of the given minor version on this machine, found via pyenv or uv."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        proc = subprocess.run([pyenv, "prefix", minor], capture_output=True, text=True)
        if proc.returncode == 0:
            exe = Path(proc.stdout.strip().splitlines()[0]) / "bin" / ("python" + minor)
            if exe.is_file():
                return str(exe)
    uv = shutil.which("uv")
    if uv:
        proc = subprocess.run([uv, "python", "find", "--no-python-downloads", minor], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    return shutil.which("python" + minor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline(script: str) -> list[str]:
    """argv running a shell script in a new network namespace with only loopback up."""
    return ["unshare", "-n", "sh", "-c", "ip link set lo up && " + script]


def run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def cosybuild(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "cosybuild", *args], cwd=cwd or REPO, env=env)


def pyz(dist: Path, *args: str, python: str = "python3") -> list[str]:
    return [python, str(dist / PYZ), *args]


def copy_dist(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def one_sentence(stderr: str) -> str:
    """The error line a user sees; asserts there is no traceback around it."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("cosyinstall: ") or line.startswith("cosybuild: ")]
    assert lines, stderr
    return lines[-1]


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, mtime_ns, size) for every file under root, to prove nothing was rewritten."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


# -- helpers added for the installer's apply tests (append-only) ------------------------------


def tree_digest(root: Path, exclude: tuple = (".cosyinstall",)) -> dict[str, tuple]:
    """relpath -> (kind, content sha256 or link target, mode) for everything under root.

    Compares two installs by content (unlike tree_snapshot, which proves nothing was rewritten);
    top-level names in `exclude` (state and logs) are left out. The one thing uv writes that
    differs between two clean installs, the time in dist-info/uv_cache.json (and its RECORD
    line), is not compared.
    """
    import hashlib
    import stat as st

    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in exclude:
            continue
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel.split("/")[0] in exclude:
                continue
            info = p.lstat()
            if st.S_ISLNK(info.st_mode):
                out[rel] = ("link", os.readlink(p), 0)
            elif st.S_ISDIR(info.st_mode):
                out[rel] = ("dir", "", st.S_IMODE(info.st_mode))
            elif name == "uv_cache.json" and rel_dir.name.endswith(".dist-info"):
                # uv stamps the time it unpacked the wheel: differs between any two installs.
                out[rel] = ("file", "uv cache timestamp", st.S_IMODE(info.st_mode))
            else:
                h = hashlib.sha256()
                with p.open("rb") as f:
                    data = f.read() if name == "RECORD" else None
                    if data is not None:
                        data = b"".join(line for line in data.splitlines(True) if b"/uv_cache.json," not in line)
                        h.update(data)
                    else:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                out[rel] = ("file", h.hexdigest(), st.S_IMODE(info.st_mode))
    return out


def rewrite_sums(dist: Path) -> None:
    """Recompute SHA256SUMS (with size lines) for the files it lists plus any zip present."""
    import hashlib

    sys.path.insert(0, str(REPO / "installer"))
    from cosyinstall.sums import format_sums

    names = set()
    sums = dist / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            if line and not line.startswith("#"):
                names.add(line.split(None, 1)[1].lstrip("*"))
    names |= {p.name for p in dist.glob("*.zip")}
    items = []
    for name in sorted(names):
        path = dist / name
        if path.exists():
            items.append((name, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size))
    sums.write_text(format_sums(items))


def apply_argv(dist: Path, to: Path, *extra: str, python: str = "python3") -> list[str]:
    """`apply --no-start` of dist into to, offline (unshare -n), as argv."""
    cmd = " ".join(pyz(dist, "apply", "--no-start", "--from", str(dist), "--to", str(to), *extra, python=python))
    return ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + cmd]


def manifest_bytes(kind: str, files: dict, target: dict | None = None, meta: dict | None = None,
                   sizes: dict | None = None) -> bytes:
    """MANIFEST.json for `files` (name -> bytes); `sizes` overrides a listed size (to make it lie)."""
    import hashlib
    import json

    listed = [{"path": name, "size": (sizes or {}).get(name, len(data)), "sha256": hashlib.sha256(data).hexdigest()}
              for name, data in sorted(files.items())]
    doc = {"format": "cosy-offline/1", "kind": kind, "name": "test",
           "target": target if target is not None else {"python": "3.10", "platform": "x86_64-manylinux_2_28"},
           "files": listed}
    doc.update(meta or {})
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def write_zip(path: Path, members: list, compress: int = 8) -> Path:
    """Write members [(name or ZipInfo, bytes)] as they are: no checks, duplicates allowed."""
    import warnings
    import zipfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; that is the point
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
                if not isinstance(name, zipfile.ZipInfo):
                    info.external_attr = 0o100644 << 16
                    info.compress_type = compress
                z.writestr(info, data)
    return path


def patch_file(path: Path, old: bytes, new: bytes) -> None:
    """Replace every occurrence of old with new (same length): edits names and sizes in headers."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert old in data, old
    path.write_bytes(data.replace(old, new))


def tree_differences(a: dict, b: dict) -> list[str]:
    """Paths whose tree_digest entries differ between two installs that may be different generations.

    uv records the path it installed a model's wheel from (direct_url.json, and its hash in
    RECORD); that path is inside one generation's folder, so two generations differ there alone.
    """
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)
                  and not k.endswith(("/direct_url.json", ".dist-info/RECORD")))


STATE_AND_RECORDS = (".cosyinstall", ".cosygen")


def small_archive(files: dict[str, bytes]) -> bytes:
    """A real zip holding `files`: a model's `unzip` archive (pack reads what it unpacks to)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(name, data)
    return buffer.getvalue()


def small_manifest(model_repo: str = "m") -> str:
    """A complete builder manifest: one pinned package, a local app folder, one local model, a server."""
    return """
name = "t"
[target]
python = "3.10"
platform = "x86_64-manylinux_2_28"
[packages]
requirements = ["six==1.16.0"]
[app]
path = "app"
[[models]]
name = "m"
source = "local"
repo = "%s"
[server]
command = ["python", "server.py", "--port", "{port}"]
port = 6008
ready-log = "ready"
""" % model_repo


class PassReader:
    """The reader stage_one_pass asks for (path, label, each member's info with its data offset, mtime)."""

    def __init__(self, path: Path) -> None:
        from cosyinstall.zipcheck import check_zip

        self.path = str(path)
        self.label = path.name
        self.zip = check_zip(str(path))

    def _info(self, key: str):
        return self.zip.getinfo(key)

    def mtime(self, key: str) -> float:
        from cosyinstall.zipread import member_time

        return member_time(self._info(key))


def dist_name(name: str) -> str:
    """A project name as wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name)


def wheel_metadata(name: str, version: str, requires: Iterable[str]) -> str:
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version]
    lines += ["Requires-Dist: " + r for r in requires]
    return "\n".join(lines) + "\n"


def make_wheel(directory: Path, name: str, version: str, requires: Iterable[str] = (), tag: str = "py3-none-any",
               payload: str = "", extra: Optional[Dict[str, str]] = None) -> Path:
    """A real, installable wheel with one module named after the project (plus `extra` members)."""
    dist, module = dist_name(name), dist_name(name).lower()
    info = "%s-%s.dist-info" % (dist, version)
    files = {
        module + "/__init__.py": "VERSION = %r\n%s" % (version, payload),
        info + "/METADATA": wheel_metadata(name, version, requires),
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: loopindex\nRoot-Is-Purelib: true\nTag: %s\n" % tag,
    }
    files.update(extra or {})
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = hashlib.sha256(data).digest()
        record.append("%s,sha256=%s,%d" % (path, base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), len(data)))
    record.append(info + "/RECORD,,")
    files[info + "/RECORD"] = "\n".join(record) + "\n"
    path = directory / ("%s-%s-%s.whl" % (dist, version, tag))
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), text)
    return path
