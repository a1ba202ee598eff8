"""Verified extraction of a model-like tree with 1 job against N jobs (issue 15's bar: 2 jobs <= 0.65x).

    python bench/extract_jobs.py [--mb 1024] [--jobs 2] [--runs 3]

Writes a zip like pretrained_models.zip (a few large stored weight files, many small deflated
configs), then times onepass.stage_one_pass exactly as apply runs it: the whole-file sha256
against SHA256SUMS and every member's sha256 in the same pass, staged files fsynced. The page
cache is dropped before each run when permitted. Runs are interleaved; medians compared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "installer"))

from cosyinstall.install_plan import Item  # noqa: E402
from cosyinstall.onepass import Target, stage_one_pass  # noqa: E402
from cosyinstall.zipcheck import check_zip  # noqa: E402
from cosyinstall.zipread import member_time  # noqa: E402
from coldcache import drop_caches  # noqa: E402


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.label = os.path.basename(path)
        self.zip = check_zip(path)

    def _info(self, key: str) -> zipfile.ZipInfo:
        return self.zip.getinfo(key)

    def mtime(self, key: str) -> float:
        return member_time(self._info(key))


def make_zip(path: str, mb: int) -> list:
    items = []
    block = os.urandom(1024 * 1024)
    weights = max(1, mb // 200)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(weights):
            name = "voice/weights-%d.pt" % i
            hasher = hashlib.sha256()
            with archive.open(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), "w", force_zip64=True) as out:
                for j in range(mb // weights):
                    data = hashlib.sha256(b"%d-%d" % (i, j)).digest() + block[32:]
                    hasher.update(data)
                    out.write(data)
            items.append(Item(name, name, (mb // weights) * 1024 * 1024, hasher.hexdigest(), False))
        for i in range(2000):
            name = "voice/conf/%04d.json" % i
            data = (b'{"layer": %d, "dims": [512, 512, 1024]}\n' % i) * 50
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
            items.append(Item(name, name, len(data), hashlib.sha256(data).hexdigest(), False))
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="extract-jobs-", dir=args.dir)
    try:
        path = os.path.join(work, "pretrained_models.zip")
        items = make_zip(path, args.mb)
        with open(path, "rb") as handle:
            whole = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                whole.update(chunk)
        reader = _Reader(path)
        times: dict = {1: [], args.jobs: []}
        dropped = True
        for _ in range(args.runs):
            for jobs in (1, args.jobs):
                staging = os.path.join(work, "staging")
                shutil.rmtree(staging, ignore_errors=True)
                dropped = drop_caches() and dropped
                targets = [Target(i, os.path.join(staging, i.rel), True) for i in items]
                start, cpu = time.monotonic(), os.times()
                stage_one_pass(reader, targets, whole.hexdigest(), None, jobs=jobs)
                times[jobs].append(time.monotonic() - start)
                used = os.times()
                # CPU beside wall time: a run whose CPU is near wall x cores is bound by the cores, not the disk.
                print("jobs %d: %.2f s, %.2f CPU-s (user %.2f, system %.2f)"
                      % (jobs, times[jobs][-1], used.user - cpu.user + used.system - cpu.system,
                         used.user - cpu.user, used.system - cpu.system), flush=True)
        one, many = statistics.median(times[1]), statistics.median(times[args.jobs])
        print("page cache %s before each run" % ("dropped" if dropped else "NOT dropped (not permitted)"))
        print("%d MB model-like tree: 1 job %.2f s, %d jobs %.2f s: %.2fx" % (args.mb, one, args.jobs, many, many / one))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
