"""Apply with the bundled CPython against apply with the box's own, side by side, in one box image.

    python bench/bundled_python.py [--rounds 3]     (as root, with `pip install -e .` done)

Packs the demo with `bundle-python = true` (the CPython is the loopback stand-in of
tests/pythonstandin.py: the real relocatable builds are not reachable from here), enters the
Debian bookworm box image (tests/boximages.py; python3.11 only) with the uploads and this
machine's CPython 3.10 (pyenv, conda or uv) bind-mounted at their own paths, and times
`cosyinstall apply --no-start` into a fresh --to: once with `--python` that CPython 3.10
("the box's own"), once with none (the bundled one is unpacked and used). Rounds alternate;
medians are compared. The issue's bar: bundled <= 1.1x own. Also prints the archive's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "builder"), str(REPO / "installer")]

from boximages import Box, cache_root, image  # noqa: E402
from pythonstandin import make_standin, pack_bundled_demo  # noqa: E402
from support import find_python  # noqa: E402

UPLOAD = "/root/autodl-tmp"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    own = find_python("3.10")
    if not own:
        print("no CPython 3.10 on this machine to compare with", file=sys.stderr)
        return 2
    own_prefix = str(Path(own).resolve().parents[1])
    image("bookworm", log=print)
    archive = make_standin(cache_root().parent / "standin")
    with tempfile.TemporaryDirectory(prefix="bench-bundled-") as tmp:
        work = Path(tmp)
        dist, proc, lock = pack_bundled_demo(work, archive)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return 1
        zip_size = (dist / "offline_packages.zip").stat().st_size
        times = {"own": [], "bundled": []}
        with Box("bookworm", work / "box", {str(dist): UPLOAD, own_prefix: own_prefix}) as box:
            for i in range(args.rounds):
                for kind in ("own", "bundled") if i % 2 == 0 else ("bundled", "own"):
                    to = "%s/run-%d-%s" % (UPLOAD, i, kind)
                    argv = ["python3", UPLOAD + "/cosyinstall.pyz", "apply", "--no-start", "--to", to]
                    if kind == "own":
                        argv += ["--python", str(Path(own_prefix) / "bin" / "python3.10")]
                    started = time.monotonic()
                    done = box.run(argv, timeout=900)
                    seconds = time.monotonic() - started
                    if done.returncode != 0:
                        print(done.stdout + done.stderr, file=sys.stderr)
                        return 1
                    times[kind].append(seconds)
                    print("round %d %-8s %.2f s" % (i + 1, kind, seconds))
    own_s, bundled_s = statistics.median(times["own"]), statistics.median(times["bundled"])
    pin = lock["packages"]["python"]
    print("bundled CPython %s archive: %s, %.1f MB (glibc floor %s); offline_packages.zip %.1f MB"
          % (pin["version"], pin["archive"], pin["size"] / 1e6, pin["glibc_floor"], zip_size / 1e6))
    print("apply --no-start, median of %d: box's own CPython %.2f s, bundled %.2f s: %.2fx (bar: 1.10x)"
          % (args.rounds, own_s, bundled_s, bundled_s / own_s))
    return 0 if bundled_s <= 1.1 * own_s else 1


if __name__ == "__main__":
    sys.exit(main())
