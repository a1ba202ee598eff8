"""Benchmark: cosybuild's fetch against `pip download` of the same files from one loopback index.

Usage: python bench/fetch_vs_pip.py [--lock LOCK | --wheels DIR] [--jobs 8] [--repeat 3] [--rate-mbps 20]

With --lock (e.g. lockfiles/cosyvoice2-pytorch.lock.json), the lock's wheels are taken from the
cosybuild cache (run `cosybuild pack` on its manifest once first) and served from a PEP 503
simple index on 127.0.0.1. cosybuild then does what `pack` does: locate every pin on that index
(uv pip compile --no-deps) and fetch in parallel with verification; pip downloads the same pins
for the lock's target. Without --lock, --wheels DIR is served, or a small fixed set of
pure-Python wheels fetched once with `pip download`, and cosybuild is handed the URLs.
Loopback is far faster than any real link, so --rate-mbps can cap each connection's speed to
show what parallel downloads buy on a real network.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# Runnable from a checkout without installing: the packages live in builder/ and installer/.
_ROOT = Path(__file__).resolve().parent.parent
for _sub in ("builder", "installer"):
    if str(_ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(_ROOT / _sub))

from cosybuild.cache import Cache  # noqa: E402
from cosybuild.packageindex import FetchItem, fetch_all  # noqa: E402
from cosybuild.profile import load_profile  # noqa: E402
from cosybuild.resolve import LockedFile, locate  # noqa: E402
from cosybuild.targettags import target_platforms  # noqa: E402
from cosyinstall.progress import NullReporter  # noqa: E402

# Pure-Python wheels, so the same set suits every interpreter and platform; a few MB in all.
DEFAULT_WHEELS = [
    "six==1.16.0",
    "idna==3.7",
    "packaging==24.1",
    "certifi==2024.7.4",
    "urllib3==2.2.2",
    "requests==2.32.3",
    "click==8.1.7",
    "jinja2==3.1.4",
    "pygments==2.18.0",
    "networkx==3.3",
    "setuptools==70.3.0",
    "pip==24.1.2",
    "babel==2.15.0",
    "sympy==1.13.0",
]


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Wheel:
    def __init__(self, path: Path, filename: Optional[str] = None, size: Optional[int] = None,
                 sha256: Optional[str] = None) -> None:
        self.path = path
        self.filename = filename or path.name
        parts = self.filename[: -len(".whl")].split("-")
        self.name, self.version = parts[0], parts[1]
        self.size = path.stat().st_size if size is None else size
        if sha256 is None:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
        self.sha256 = sha256


class SimpleIndex:
    """Serves /simple/<project>/ pages and /files/<filename>, optionally rate-limited."""

    def __init__(self, wheels: List[Wheel], rate_bytes: float) -> None:
        self.projects: Dict[str, List[Wheel]] = {}
        for wheel in wheels:
            self.projects.setdefault(normalize(wheel.name), []).append(wheel)
        self.files = {wheel.filename: wheel for wheel in wheels}
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # Keep-alive, as real index servers and CDNs offer it.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                index.serve(self, rate_bytes)

            def do_HEAD(self) -> None:
                # uv asks first whether ranges work, then reads a wheel's metadata by range.
                index.serve(self, rate_bytes, body=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[assignment]
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def page(self, project: str) -> Optional[bytes]:
        wheels = self.projects.get(project)
        if wheels is None:
            return None
        links = "".join(
            '<a href="../../files/%s#sha256=%s">%s</a><br>\n'
            % (html.escape(w.filename), w.sha256, html.escape(w.filename))
            for w in wheels
        )
        return ("<!DOCTYPE html>\n<html><body>\n%s</body></html>\n" % links).encode()

    def serve(self, handler: http.server.BaseHTTPRequestHandler, rate_bytes: float, body: bool = True) -> None:
        path = handler.path.split("?", 1)[0]
        if path.startswith("/simple/"):
            project = normalize(path[len("/simple/"):].strip("/"))
            page = self.page(project)
            if page is None:
                handler.send_error(404)
                return
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.send_header("Content-Length", str(len(page)))
            handler.end_headers()
            if body:
                handler.wfile.write(page)
            return
        wheel = self.files.get(path[len("/files/"):]) if path.startswith("/files/") else None
        if wheel is None:
            handler.send_error(404)
            return
        first, last = byte_range(handler.headers.get("Range", ""), wheel.size)
        if (first, last) != (0, wheel.size - 1):
            handler.send_response(206)
            handler.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, wheel.size))
        else:
            handler.send_response(200)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(last + 1 - first))
        handler.end_headers()
        if not body:
            return
        chunk = 64 * 1024
        began = time.monotonic()
        sent = 0
        left = last + 1 - first
        with open(wheel.path, "rb") as handle:
            handle.seek(first)
            while left > 0:
                block = handle.read(min(chunk, left))
                if not block:
                    break
                handler.wfile.write(block)
                sent += len(block)
                left -= len(block)
                if rate_bytes:
                    # Sleep until this connection is back under its budget: a per-link cap.
                    ahead = sent / rate_bytes - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


def byte_range(header: str, size: int) -> Tuple[int, int]:
    """(first, last) byte for `bytes=a-b`, `bytes=a-` or `bytes=-n`; the whole file otherwise."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or size == 0 or not (match.group(1) or match.group(2)):
        return 0, size - 1
    if not match.group(1):
        return max(0, size - int(match.group(2))), size - 1
    first = min(int(match.group(1)), size - 1)
    last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    return first, max(first, last)


def pip_env() -> Dict[str, str]:
    # pip must see only the loopback index: no config files, no PIP_* (find-links, extra
    # indexes, constraints) and no proxy for 127.0.0.1.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def download_default(dest: Path) -> None:
    print("fetching %d wheels once with pip download into %s" % (len(DEFAULT_WHEELS), dest), flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest)]
        + DEFAULT_WHEELS,
        check=True,
    )


def time_cosybuild(index: SimpleIndex, wheels: List[Wheel], jobs: int, work: Path) -> float:
    cache_root = work / ("cache-%d" % time.monotonic_ns())
    items = [FetchItem(w.filename, w.size, w.sha256, "%s/files/%s" % (index.base, w.filename)) for w in wheels]
    started = time.perf_counter()
    paths = fetch_all(items, Cache(cache_root), NullReporter(), jobs=jobs)
    elapsed = time.perf_counter() - started
    assert len(paths) == len(wheels)
    shutil.rmtree(cache_root)
    return elapsed


def wheels_from_lock(lock_path: Path) -> Tuple[List[Wheel], Dict[str, str]]:
    """The lock's wheels, read from the cosybuild cache under their locked names."""
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    cache = Cache()
    wheels, missing = [], []
    for f in lock["packages"]["files"]:
        if not f["filename"].endswith(".whl"):
            continue  # pip download would build an sdist's metadata; both tools skip them
        path = cache.get(f["sha256"], f["size"])
        if path is None:
            missing.append(f["filename"])
        else:
            wheels.append(Wheel(path, f["filename"], f["size"], f["sha256"]))
    if missing:
        raise SystemExit("%d locked wheels (first: %s) are not in the cosybuild cache %s; run cosybuild pack on the "
                         "lock's manifest once first" % (len(missing), missing[0], cache.root))
    return wheels, lock["target"]


def time_cosybuild_lock(index: SimpleIndex, wheels: List[Wheel], target: Dict[str, str], jobs: int, work: Path) -> float:
    """What pack does: locate the pins on the index with uv, then fetch and verify in parallel."""
    stamp = time.monotonic_ns()
    manifest = work / ("bench-%d.toml" % stamp)
    (work / "app").mkdir(exist_ok=True)
    manifest.write_text(
        'name = "bench"\n[target]\npython = "%s"\nplatform = "%s"\n[packages]\nrequirements = ["bench"]\n'
        'index-url = "%s/simple"\n[app]\npath = "app"\n[server]\ncommand = ["true"]\n'
        % (target["python"], target["platform"], index.base), encoding="utf-8")
    profile = load_profile(str(manifest))
    # A fresh uv cache per round, as pip runs with --no-cache-dir.
    os.environ["UV_CACHE_DIR"] = str(work / ("uv-cache-%d" % stamp))
    cache_root = work / ("cache-%d" % stamp)
    locked = [LockedFile(w.name, w.version, w.filename, w.size, w.sha256) for w in wheels]
    started = time.perf_counter()
    urls = locate(profile, locked)
    paths = fetch_all([FetchItem(f.filename, f.size, f.sha256, urls[f.filename]) for f in locked], Cache(cache_root),
                      NullReporter(), jobs=jobs)
    elapsed = time.perf_counter() - started
    assert len(paths) == len(wheels)
    shutil.rmtree(cache_root)
    shutil.rmtree(os.environ.pop("UV_CACHE_DIR"), ignore_errors=True)
    return elapsed


def pip_target_args(target: Dict[str, str]) -> List[str]:
    """pip download options selecting wheels for the lock's target instead of this machine."""
    minor = target["python"].replace(".", "")
    args = ["--python-version", target["python"], "--implementation", "cp", "--abi", "cp" + minor, "--abi", "abi3",
            "--abi", "none"]
    for platform in target_platforms(target["platform"]):
        args += ["--platform", platform]
    return args


def time_pip(index: SimpleIndex, wheels: List[Wheel], work: Path, extra: List[str]) -> float:
    dest = work / ("pip-%d" % time.monotonic_ns())
    specs = ["%s==%s" % (w.name, w.version) for w in wheels]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
        "--quiet", "--only-binary=:all:", "--index-url", index.base + "/simple", "-d", str(dest),
    ] + extra + specs
    started = time.perf_counter()
    done = subprocess.run(command, env=pip_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("pip download failed (exit %d)" % done.returncode)
    got = sorted(p.name for p in dest.iterdir())
    if got != sorted(w.filename for w in wheels):
        print("note: pip downloaded a different set: %s" % ", ".join(got), file=sys.stderr)
    shutil.rmtree(dest)
    return elapsed


def pick_wheels(directory: Path) -> List[Wheel]:
    wheels: List[Wheel] = []
    seen: Dict[Tuple[str, str], str] = {}
    for path in sorted(directory.glob("*.whl")):
        wheel = Wheel(path)
        key = (normalize(wheel.name), wheel.version)
        # pip fetches one file per name==version; keep the sets equal by keeping one too.
        if key in seen:
            print("skipping %s: %s already stands for %s==%s" % (path.name, seen[key], *key), file=sys.stderr)
            continue
        seen[key] = path.name
        wheels.append(wheel)
    return wheels


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, help="a cosybuild lock whose wheels (from the cosybuild cache) are served")
    parser.add_argument("--wheels", type=Path, help="directory of wheels to serve (default: fetch a fixed set once)")
    parser.add_argument("--jobs", type=int, default=8, help="cosybuild download threads (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each tool counts (default 3)")
    parser.add_argument("--rate-mbps", type=float, default=0.0, help="cap each connection at this many MB/s (default: none)")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip download, e.g. --platform=...")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cosybench-") as tmp:
        work = Path(tmp)
        target: Optional[Dict[str, str]] = None
        if args.lock is not None:
            wheels, target = wheels_from_lock(args.lock)
            args.pip_arg = pip_target_args(target) + args.pip_arg
        else:
            source = args.wheels
            if source is None:
                source = work / "wheels"
                source.mkdir()
                download_default(source)
            wheels = pick_wheels(source)
        if not wheels:
            raise SystemExit("no wheels to serve")
        total = sum(w.size for w in wheels)
        print("%d wheels, %.1f MB, served from a loopback simple index%s"
              % (len(wheels), total / 1e6, " at %.1f MB/s per connection" % args.rate_mbps if args.rate_mbps else ""))

        index = SimpleIndex(wheels, args.rate_mbps * 1e6)
        try:
            cosy_times: List[float] = []
            pip_times: List[float] = []
            for round_no in range(1, args.repeat + 1):
                if target is not None:
                    cosy_times.append(time_cosybuild_lock(index, wheels, target, args.jobs, work))
                else:
                    cosy_times.append(time_cosybuild(index, wheels, args.jobs, work))
                pip_times.append(time_pip(index, wheels, work, args.pip_arg))
                print("round %d: cosybuild %.2f s, pip %.2f s" % (round_no, cosy_times[-1], pip_times[-1]), flush=True)
        finally:
            index.close()

    cosy, pip = min(cosy_times), min(pip_times)
    print()
    print("%-32s %8s %10s" % ("tool", "best s", "MB/s"))
    what = "cosybuild locate+fetch" if target is not None else "cosybuild fetch_all"
    print("%-32s %8.2f %10.1f" % ("%s (jobs=%d)" % (what, args.jobs), cosy, total / 1e6 / cosy))
    print("%-32s %8.2f %10.1f" % ("pip download --no-deps", pip, total / 1e6 / pip))
    print("ratio pip / cosybuild: %.2fx" % (pip / cosy))
    if target is None:
        print("(pip's time includes starting Python and reading one index page per project; fetch_all is handed URLs)")
    else:
        print("(both read the index: cosybuild locates every pin with uv, then fetches; pip resolves and downloads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
