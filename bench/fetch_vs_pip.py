"""Benchmark: cosybuild.fetch.fetch_all against `pip download` from the same loopback index.

Usage: python bench/fetch_vs_pip.py [--wheels DIR] [--jobs 8] [--repeat 3] [--rate-mbps 20]

Without --wheels, a small fixed set of pure-Python wheels is fetched once with `pip download`
(from whatever index pip is configured to use) into a temporary directory. The wheels are then
served from a PEP 503 simple index on 127.0.0.1, and both tools download the same files from it
into fresh directories. Loopback is far faster than any real link, so --rate-mbps can cap each
connection's speed to show what parallel downloads buy on a real network.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import http.server
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
from cosybuild.fetch import FetchItem, fetch_all  # noqa: E402
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
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filename = path.name
        parts = path.name[: -len(".whl")].split("-")
        self.name, self.version = parts[0], parts[1]
        self.size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        self.sha256 = digest.hexdigest()


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

    def serve(self, handler: http.server.BaseHTTPRequestHandler, rate_bytes: float) -> None:
        path = handler.path.split("?", 1)[0]
        if path.startswith("/simple/"):
            project = normalize(path[len("/simple/"):].strip("/"))
            body = self.page(project)
            if body is None:
                handler.send_error(404)
                return
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        wheel = self.files.get(path[len("/files/"):]) if path.startswith("/files/") else None
        if wheel is None:
            handler.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        if match and int(match.group(1)) < wheel.size:
            start = int(match.group(1))
            handler.send_response(206)
            handler.send_header("Content-Range", "bytes %d-%d/%d" % (start, wheel.size - 1, wheel.size))
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(wheel.size - start))
        handler.end_headers()
        chunk = 64 * 1024
        began = time.monotonic()
        sent = 0
        with open(wheel.path, "rb") as handle:
            handle.seek(start)
            for block in iter(lambda: handle.read(chunk), b""):
                handler.wfile.write(block)
                sent += len(block)
                if rate_bytes:
                    # Sleep until this connection is back under its budget: a per-link cap.
                    ahead = sent / rate_bytes - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


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
    parser.add_argument("--wheels", type=Path, help="directory of wheels to serve (default: fetch a fixed set once)")
    parser.add_argument("--jobs", type=int, default=8, help="cosybuild download threads (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each tool counts (default 3)")
    parser.add_argument("--rate-mbps", type=float, default=0.0, help="cap each connection at this many MB/s (default: none)")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip download, e.g. --platform=...")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cosybench-") as tmp:
        work = Path(tmp)
        source = args.wheels
        if source is None:
            source = work / "wheels"
            source.mkdir()
            download_default(source)
        wheels = pick_wheels(source)
        if not wheels:
            raise SystemExit("no .whl files in %s" % source)
        total = sum(w.size for w in wheels)
        print("%d wheels, %.1f MB, served from a loopback simple index%s"
              % (len(wheels), total / 1e6, " at %.1f MB/s per connection" % args.rate_mbps if args.rate_mbps else ""))

        index = SimpleIndex(wheels, args.rate_mbps * 1e6)
        try:
            cosy_times: List[float] = []
            pip_times: List[float] = []
            for round_no in range(1, args.repeat + 1):
                cosy_times.append(time_cosybuild(index, wheels, args.jobs, work))
                pip_times.append(time_pip(index, wheels, work, args.pip_arg))
                print("round %d: cosybuild %.2f s, pip %.2f s" % (round_no, cosy_times[-1], pip_times[-1]), flush=True)
        finally:
            index.close()

    cosy, pip = min(cosy_times), min(pip_times)
    print()
    print("%-32s %8s %10s" % ("tool", "best s", "MB/s"))
    print("%-32s %8.2f %10.1f" % ("cosybuild fetch_all (jobs=%d)" % args.jobs, cosy, total / 1e6 / cosy))
    print("%-32s %8.2f %10.1f" % ("pip download --no-deps", pip, total / 1e6 / pip))
    print("ratio pip / cosybuild: %.2fx" % (pip / cosy))
    print("(pip's time includes starting Python and reading one index page per project; fetch_all is handed URLs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
