"""apply against uv on one bundle, side by side: (a) the seed's way, (b) uv alone, (c) cosyinstall apply.

    python bench/apply_vs_uv.py --dist DIST [--python PY] [--runs 2] [--work DIR] [--jobs N]

(a) unzip offline_packages.zip, then `uv venv` + `uv pip install --no-index --find-links wheels
-r requirements.txt`; (b) the same two uv commands on wheels extracted beforehand (not timed);
(c) `cosyinstall apply --no-start` from this checkout. Every run starts with an empty uv cache on
the same filesystem and, when permitted (root), with the page cache dropped and the memory that
freed handed back to the host where the VM does that (coldcache.py). The runs are interleaved,
each round starting one side later (a, b, c, then b, c, a, then c, a, b); the medians are
compared. With `--warm GB`, that much memory is touched and freed right before each run, so
that every side starts with pages the guest holds (closer to a box that is not a VM); without
it, every side starts with all free memory handed back. Peak RSS of (c) is the
cosyinstall process's own VmHWM (uv, its child, is not counted).

Each side's CPU time (user + system, all its processes) is printed too, with the wall time
it cannot beat on this machine's cores (CPU / cores): where uv alone already keeps every core
busy, whatever cosyinstall adds in CPU shows up in wall time, however well it overlaps.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile

from coldcache import drop_caches, warm_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def target_python() -> str:
    prefix = subprocess.run(["pyenv", "prefix", "3.10"], capture_output=True, text=True).stdout.strip()
    if prefix:
        return os.path.join(prefix, "bin", "python3.10")
    found = shutil.which("python3.10")
    if not found:
        sys.exit("no CPython 3.10: pass --python")
    return found


def uv_env(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(UV_CACHE_DIR=cache, UV_OFFLINE="1", UV_NO_CONFIG="1", UV_NO_PROGRESS="1", UV_PYTHON_DOWNLOADS="never")
    return env


def uv_install(uv: str, python: str, src: str, dest: str) -> None:
    env = uv_env(os.path.join(dest, "uv-cache"))
    venv = os.path.join(dest, "venv")
    subprocess.run([uv, "venv", "--quiet", "--python", python, venv], env=env, check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", os.path.join(venv, "bin", "python"), "--no-index",
                    "--find-links", os.path.join(src, "wheels"), "--requirement", os.path.join(src, "requirements.txt")],
                   env=env, check=True)


def run_a(uv: str, python: str, dist: str, work: str) -> float:
    start = time.monotonic()
    subprocess.run(["unzip", "-q", os.path.join(dist, "offline_packages.zip"), "-d", work], check=True)
    uv_install(uv, python, work, work)
    return time.monotonic() - start


def run_b(uv: str, python: str, extracted: str, work: str) -> float:
    start = time.monotonic()
    uv_install(uv, python, extracted, work)
    return time.monotonic() - start


def run_c(python: str, dist: str, work: str, jobs: int) -> tuple:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "installer"))
    argv = [sys.executable, "-m", "cosyinstall", "apply", "--no-start", "--quiet", "--from", dist,
            "--to", os.path.join(work, "to"), "--python", python]
    if jobs:
        argv += ["--jobs", str(jobs)]
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                with open("/proc/%d/status" % proc.pid) as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = proc.wait()
    elapsed = time.monotonic() - start
    sampler.join()
    if code != 0:
        sys.exit("cosyinstall apply failed (exit %d)" % code)
    return elapsed, peak[0] / 1024.0


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", required=True)
    parser.add_argument("--python")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", help="scratch folder on the install disk (default: beside --dist)")
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--only", default="abc", help="which sides to run, e.g. bc")
    parser.add_argument("--warm", type=float, default=0.0,
                        help="GiB of memory to touch and free right before each run (coldcache.warm_memory)")
    args = parser.parse_args()
    dist = os.path.abspath(args.dist)
    python = args.python or target_python()
    work = os.path.abspath(args.work or os.path.join(os.path.dirname(dist), "bench-apply-vs-uv"))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    extracted = os.path.join(work, "extracted")
    with zipfile.ZipFile(os.path.join(dist, "offline_packages.zip")) as archive:
        names = [n for n in archive.namelist() if n.startswith("wheels/") or n in ("requirements.txt", "uv/uv")]
        archive.extractall(extracted, names)
    uv = os.path.join(extracted, "uv", "uv")
    os.chmod(uv, 0o755)
    times: dict = {"a": [], "b": [], "c": []}
    cpu: dict = {"a": [], "b": [], "c": []}
    peaks = []
    dropped = True
    for run in range(args.runs):
        # Each round starts one side later (abc, bca, cab): no side always follows the same one.
        shift = run % len(args.only)
        for side in args.only[shift:] + args.only[:shift]:
            scratch = os.path.join(work, "run-%s" % side)
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            dropped = drop_caches() and dropped
            warm_memory(args.warm)
            before = _children_cpu()
            if side == "a":
                times["a"].append(run_a(uv, python, dist, scratch))
            elif side == "b":
                times["b"].append(run_b(uv, python, extracted, scratch))
            else:
                elapsed, peak = run_c(python, dist, scratch, args.jobs)
                times["c"].append(elapsed)
                peaks.append(peak)
            cpu[side].append(_children_cpu() - before)
            print("run %d %s: %.1f s, %.1f CPU-s%s" % (run + 1, side, times[side][-1], cpu[side][-1],
                                                    "  peak RSS %.0f MB" % peaks[-1] if side == "c" else ""), flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
    print("page cache %s before each run" % ("dropped" if dropped else "NOT dropped (not permitted)"))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    cores = os.cpu_count() or 1
    for side, label in (("a", "(a) seed: unzip + uv venv + uv pip install"), ("b", "(b) uv alone on extracted wheels"),
                        ("c", "(c) cosyinstall apply --no-start")):
        if side in med:
            used = statistics.median(cpu[side])
            print("%-46s median %.1f s  (%s); %.0f CPU-s, at least %.1f s on %d cores"
                  % (label, med[side], ", ".join("%.1f" % t for t in times[side]), used, used / cores, cores))
    if "c" in med:
        if "a" in med:
            print("(c)/(a) = %.2f" % (med["c"] / med["a"]))
        if "b" in med:
            print("(c)/(b) = %.2f" % (med["c"] / med["b"]))
        print("peak RSS of cosyinstall: %.0f MB" % max(peaks))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
