"""A STAND-IN for nvidia-smi (this machine has no GPU): a shell script put first on PATH.

It answers the query-mode call cosyinstall makes (`--query-gpu=... --format=csv,noheader,nounits`)
with the CSV row in `gpu.csv` beside it, so a test changes the GPU by rewriting that file.
"""

from __future__ import annotations

import os
from pathlib import Path

SCRIPT = """#!/bin/sh
# STAND-IN for nvidia-smi: prints the row of gpu.csv for any --query-gpu call.
here=$(dirname "$0")
[ -f "$here/fail" ] && { echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."; exit 9; }
cat "$here/gpu.csv"
"""

A100 = "NVIDIA A100-SXM4-40GB, 8.0, 535.104.05, 40960"
RTX4090 = "NVIDIA GeForce RTX 4090, 8.9, 550.54.14, 24564"
T4 = "Tesla T4, 7.5, 535.104.05, 15360"


def install_standin(folder: Path, row: str) -> Path:
    """Write the stand-in into `folder` answering `row`; put `folder` first on PATH yourself."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(SCRIPT)
    exe.chmod(0o755)
    set_gpu(folder, row)
    return folder


def set_gpu(folder: Path, row: str) -> None:
    (folder / "gpu.csv").write_text(row + "\n")


def path_with(folder: Path, env: dict | None = None) -> str:
    return str(folder) + os.pathsep + (env or os.environ).get("PATH", "")
