"""STAND-IN for python-build-standalone's relocatable CPython downloads, served on loopback.

The real `cpython-3.10.x+DATE-x86_64-unknown-linux-gnu-install_only*.tar.gz` archives that uv
installs come from outside the package registries, which this machine cannot reach. The tests
therefore make an archive of the same layout from a CPython 3.10 found on the machine (pyenv's,
built with a shared libpython), and serve it with a downloads JSON in uv's format, so that the
real `uv python install` (with UV_PYTHON_DOWNLOADS_JSON_URL) downloads, checks and installs it:

    python/bin/python3.10 (+ python3, python links)   RUNPATH rewritten to $ORIGIN/../lib
    python/lib/libpython3.10.so.1.0, python/lib/python3.10/...   (test suites left out)
    python/include/python3.10/

Its sysconfig names `/install` as the prefix, as the real builds do. Unlike a real build, the
stand-in's extension modules link the machine's libssl, libffi and the like, and its glibc
floor is that of the machine it was compiled on (2.34 or newer on bookworm).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import os
import re
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Dict

from support import REPO, cosybuild, find_python

__all__ = ["make_standin", "DownloadsServer", "downloads_json", "BUILD", "bundled_manifest", "pack_bundled_demo"]

BUILD = "20990101"  # the release date in the name; no real release carries it
_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "tkinter", "idlelib", "turtledemo", "config-3.10-x86_64-linux-gnu"}


def _prefix(minor: str) -> Path:
    exe = find_python(minor)
    if not exe:
        raise RuntimeError("no CPython %s on this machine to make the stand-in from" % minor)
    return Path(exe).resolve().parents[1]


def _rewrite_runpath(path: Path, old: str) -> None:
    """Point the executable's RUNPATH at $ORIGIN/../lib, in place (the new string is shorter)."""
    new = b"$ORIGIN/../lib"
    data = path.read_bytes()  # the launcher executable is a few kB
    needle = old.encode() + b"\0"
    if needle not in data:
        return
    assert len(new) < len(needle)
    path.write_bytes(data.replace(needle, new + b"\0" * (len(needle) - len(new))))


def make_standin(out_dir: Path, minor: str = "3.10") -> Path:
    """The stand-in archive in out_dir, made once (later calls return the same file)."""
    prefix = _prefix(minor)
    version = prefix.name if re.match(r"^\d+\.\d+\.\d+$", prefix.name) else None
    if version is None:
        import subprocess

        version = subprocess.run([str(prefix / "bin" / ("python" + minor)), "-c",
                                  "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    name = "cpython-%s+%s-x86_64-unknown-linux-gnu-install_only.tar.gz" % (version, BUILD)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / name
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if archive.exists():
            return archive
        stage = out_dir / "stage"
        shutil.rmtree(stage, ignore_errors=True)
        top = stage / "python"
        (top / "bin").mkdir(parents=True)
        exe = top / "bin" / ("python" + minor)
        shutil.copy2(prefix / "bin" / ("python" + minor), exe)
        _rewrite_runpath(exe, str(prefix / "lib"))
        os.symlink("python" + minor, top / "bin" / "python3")
        os.symlink("python" + minor, top / "bin" / "python")
        (top / "lib").mkdir()
        for lib in (prefix / "lib").iterdir():
            if lib.name.startswith("libpython"):
                shutil.copy2(lib, top / "lib" / lib.name, follow_symlinks=False)
        shutil.copytree(prefix / "lib" / ("python" + minor), top / "lib" / ("python" + minor), symlinks=True,
                        ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS or n == "site-packages"])
        (top / "lib" / ("python" + minor) / "site-packages").mkdir()
        shutil.copytree(prefix / "include", top / "include", symlinks=True)
        for sysconfigdata in (top / "lib" / ("python" + minor)).glob("_sysconfigdata_*.py"):
            text = sysconfigdata.read_text()
            sysconfigdata.write_text(text.replace(str(prefix), "/install"))
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(str(top), arcname="python", filter=_normalise)
        os.replace(partial, archive)
        shutil.rmtree(stage)
        return archive


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 946684800
    return info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def downloads_json(archive: Path, base_url: str) -> Dict[str, dict]:
    """uv's downloads JSON (the format of its download-metadata.json) listing the one archive."""
    match = re.match(r"^cpython-(\d+)\.(\d+)\.(\d+)\+(\d+)-", archive.name)
    assert match, archive.name
    major, minor, patch, build = match.groups()
    key = "cpython-%s.%s.%s-linux-x86_64-gnu" % (major, minor, patch)
    return {key: {
        "name": "cpython", "arch": {"family": "x86_64", "variant": None}, "os": "linux", "libc": "gnu",
        "major": int(major), "minor": int(minor), "patch": int(patch), "prerelease": "",
        "url": base_url.rstrip("/") + "/" + archive.name.replace("+", "%2B"),
        "sha256": _sha256(archive), "variant": None, "build": build,
    }}


class DownloadsServer:
    """Serves a folder of archives and `downloads.json` on 127.0.0.1; counts archive GETs."""

    def __init__(self, folder: Path, archive: Path) -> None:
        self.folder = folder
        self.gets: Dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].lstrip("/").replace("%2B", "+")
                path = owner.folder / name
                if "/" in name or not path.is_file():
                    self.send_error(404)
                    return
                owner.gets[name] = owner.gets.get(name, 0) + 1
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        folder.mkdir(parents=True, exist_ok=True)
        if archive.parent != folder:
            target = folder / archive.name
            if not target.exists():
                os.link(archive, target) if archive.stat().st_dev == folder.stat().st_dev else shutil.copy(archive, target)
        (folder / "downloads.json").write_text(json.dumps(downloads_json(archive, self.url), indent=1))
        self.json_url = self.url + "/downloads.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "DownloadsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def bundled_manifest(folder: Path) -> Path:
    """manifests/demo.toml with [target] bundle-python = true, its relative paths made absolute."""
    text = (REPO / "manifests" / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('name = "demo"', 'name = "demo-bundled"', 1)
    text = text.replace('platform = "x86_64-manylinux_2_28"\n', 'platform = "x86_64-manylinux_2_28"\nbundle-python = true\n', 1)
    text = text.replace('"../examples/', '"%s/examples/' % REPO)
    assert "bundle-python = true" in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-bundled.toml"
    path.write_text(text, encoding="utf-8")
    return path


def pack_bundled_demo(work: Path, archive: Path):
    """`cosybuild pack` of the bundled demo with the stand-in served: (dist, process, lock)."""
    manifest = bundled_manifest(work / "manifests")
    with DownloadsServer(work / "serve", archive) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        env["UV_PYTHON_DOWNLOADS_JSON_URL"] = server.json_url
        proc = cosybuild("pack", str(manifest), "--out", str(work / "dist"), env=env)
    lock = json.loads(manifest.with_suffix(".lock.json").read_text()) if proc.returncode == 0 else {}
    return work / "dist", proc, lock
