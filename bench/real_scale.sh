#!/usr/bin/env bash
# The real scale, run by hand (too big for CI): pack cosyvoice2-pytorch's packages (~3.4 GB,
# 172 packages, five sdists built here), install them with no network, import the stack.
#
#   bash bench/real_scale.sh [WORKDIR]   (as root)        # default WORKDIR: $TMPDIR/cosy-real-scale (about 20 GB at peak)
#
# Needs: root (unshare -n), the tools installed (pip install -e .), a CPython 3.10 (pyenv,
# uv or PATH), the package index reachable. The fork's git URL may be unreachable, so the app
# comes from a small local folder: the manifest is copied with [app] path = the demo app; the
# committed lock's packages section is what gets packed. The bundled CPython is left out
# (bundle-python dropped from the copy): its download host is unreachable here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/cosy-real-scale}
mkdir -p "$work" && work=$(cd "$work" && pwd)
py=${PYTHON:-python3}
cosybuild=(${COSYBUILD:-$py -m cosybuild})

source "$repo/bench/find_py310.sh"
py310=$(find_py310) || { echo "real_scale: no CPython 3.10 found; install one (pyenv install 3.10)" >&2; exit 4; }
echo "target CPython: $py310"

# A copy of the manifest whose app is a local folder; the committed lock goes beside it.
man=$work/manifest
rm -rf "$man" "$work/dist" "$work/box"
mkdir -p "$man"
cp "$repo/manifests/cosyvoice2-common.in" "$man/"
sed -e '/^\[app\]/,/^\[/{/^git = /d;/^rev = /d;/^submodules = /d}' -e '/^bundle-python = /d' \
    -e "s|^\[app\]|[app]\npath = \"$repo/examples/demo/app\"|" \
    "$repo/manifests/cosyvoice2-pytorch.toml" > "$man/cosyvoice2-pytorch.toml"
"$py" - "$repo/lockfiles/cosyvoice2-pytorch.lock.json" "$man/cosyvoice2-pytorch.lock.json" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
keep = {k: v for k, v in lock.items() if k not in ("app", "models")}
json.dump(keep, open(sys.argv[2], "w"), indent=2, sort_keys=True)
PY

export COSYBUILD_CACHE=${COSYBUILD_CACHE:-$work/cache}
export COSYBUILD_TARGET_PYTHON=$py310
df -h "$work" | tail -1

echo "== cosybuild pack --only packages (cache: $COSYBUILD_CACHE)"
t0=$(date +%s)
"${cosybuild[@]}" pack "$man/cosyvoice2-pytorch.toml" --only packages --out "$work/dist"
t1=$(date +%s)
echo "pack: $((t1 - t0)) s"
ls -l "$work/dist"
"$py" - "$work/dist/offline_packages.zip" <<'PY'
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    m = json.loads(z.read("MANIFEST.json"))
built = [p for p in m["packages"] if "built-from" in p]
print("packages: %d (%d built from sdists: %s)" % (len(m["packages"]), len(built), ", ".join(p["filename"] for p in built)))
PY

echo "== cosyinstall apply --no-start with no network"
t2=$(date +%s)
unshare -n sh -c "ip link set lo up && '$py310' '$work/dist/cosyinstall.pyz' apply --no-start --from '$work/dist' --to '$work/box' --python '$py310'"
t3=$(date +%s)
echo "apply: $((t3 - t2)) s"

echo "== import the stack in the new venv, with no network"
# deepspeed 0.15.1 imports triton, whose autotuner needs an active CUDA driver at import time;
# on a machine without an NVIDIA GPU that probe fails, so there triton is hidden from it.
hide_triton=0
command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1 || hide_triton=1
unshare -n "$work/box/.venv/bin/python" -c "
import sys
if $hide_triton:
    sys.modules['triton'] = None  # no GPU here: see the comment in real_scale.sh
import torch, torchaudio, pyworld, whisper, deepspeed, librosa, modelscope
print('imports ok: torch', torch.__version__, 'torchaudio', torchaudio.__version__, 'pyworld', pyworld.__version__,
      'whisper', whisper.__version__, 'deepspeed', deepspeed.__version__, 'librosa', librosa.__version__,
      'modelscope', modelscope.__version__, '(triton hidden: no GPU)' if $hide_triton else '')
"
echo "== sizes"
du -sh "$COSYBUILD_CACHE" "$work/dist/offline_packages.zip" "$work/box/.venv" | sed 's/^/  /'
echo "real_scale: pack $((t1 - t0)) s, apply $((t3 - t2)) s"
