#!/usr/bin/env bash
# The real app, run by hand (too big for CI): pack cosyvoice2-pytorch's packages with the app
# taken from a local checkout of the CosyVoice fork, install offline, import the server module
# and the `cosyvoice` package in the new venv, and run the entry point's --help.
#
#   COSYVOICE_SRC=/path/to/CosyVoice bash bench/real_app.sh [WORKDIR]   (as root)
#
# COSYVOICE_SRC is a checkout of the fork with its submodule. From a clone (or a mirror) of
# the fork and one of Matcha-TTS:
#
#   git clone https://github.com/BruceLee569/CosyVoice.git CosyVoice
#   cd CosyVoice
#   git config submodule.third_party/Matcha-TTS.url <a clone of shivammehta25/Matcha-TTS>   # only if GitHub is unreachable
#   git -c protocol.file.allow=always submodule update --init
#
# Needs: root (unshare -n), the tools installed (pip install -e .), a CPython 3.10 (pyenv, uv
# or PATH), the package index reachable unless COSYBUILD_CACHE already holds the lock's files.
# WORKDIR (default $TMPDIR/cosy-real-app) takes about 11 GB at peak; it is removed at the end
# unless KEEP=1. The models are not packed (hubs unreachable here): the --help run needs none.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=${COSYVOICE_SRC:?set COSYVOICE_SRC to a checkout of the CosyVoice fork with its submodule (see the top of this script)}
src=$(cd "$src" && pwd)
entry=runtime/python/fastapi/server.py
[ -f "$src/$entry" ] || { echo "real_app: $src has no $entry: not a checkout of the fork" >&2; exit 4; }
[ -d "$src/third_party/Matcha-TTS/matcha" ] || { echo "real_app: $src/third_party/Matcha-TTS is empty: run git submodule update --init" >&2; exit 4; }
work=${1:-${TMPDIR:-/tmp}/cosy-real-app}
mkdir -p "$work" && work=$(cd "$work" && pwd)
py=${PYTHON:-python3}
cosybuild=(${COSYBUILD:-$py -m cosybuild})

source "$repo/bench/find_py310.sh"
py310=$(find_py310) || { echo "real_app: no CPython 3.10 found; install one (pyenv install 3.10)" >&2; exit 4; }
echo "target CPython: $py310; app: $src ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"

# A copy of the manifest whose [app] is the local checkout; the committed lock's packages section beside it.
# The bundled CPython is left out (bundle-python dropped): its download host is unreachable here.
man=$work/manifest
rm -rf "$man" "$work/dist" "$work/box"
mkdir -p "$man"
cp "$repo/manifests/cosyvoice2-common.in" "$man/"
sed -e '/^\[app\]/,/^\[/{/^git = /d;/^rev = /d;/^submodules = /d}' -e '/^bundle-python = /d' \
    -e "s|^\[app\]|[app]\npath = \"$src\"|" \
    "$repo/manifests/cosyvoice2-pytorch.toml" > "$man/cosyvoice2-pytorch.toml"
"$py" - "$repo/lockfiles/cosyvoice2-pytorch.lock.json" "$man/cosyvoice2-pytorch.lock.json" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
json.dump({k: v for k, v in lock.items() if k not in ("app", "models")}, open(sys.argv[2], "w"), indent=2, sort_keys=True)
PY

export COSYBUILD_CACHE=${COSYBUILD_CACHE:-$work/cache}
export COSYBUILD_TARGET_PYTHON=$py310

echo "== cosybuild pack --only packages (cache: $COSYBUILD_CACHE)"
t0=$(date +%s)
"${cosybuild[@]}" pack "$man/cosyvoice2-pytorch.toml" --only packages --out "$work/dist"
t1=$(date +%s)

echo "== cosyinstall apply --no-start with no network"
unshare -n sh -c "ip link set lo up && '$py310' '$work/dist/cosyinstall.pyz' apply --no-start --from '$work/dist' --to '$work/box' --python '$py310'"
t2=$(date +%s)

# No GPU here: deepspeed's and torch's optional imports of triton probe the CUDA driver at import
# time and fail without one, so triton is hidden (as in real_scale.sh); a GPU box needs no such thing.
hide=0
command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1 || hide=1
prelude="import sys
if $hide:
    sys.modules['triton'] = None"

echo "== import the cosyvoice package and the server module in the new venv, offline"
(cd "$work/box" && unshare -n .venv/bin/python -c "$prelude
import importlib.util, os
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), 'third_party', 'Matcha-TTS')]
import cosyvoice, cosyvoice.cli.cosyvoice as cli
spec = importlib.util.spec_from_file_location('cosyvoice_fastapi_server', '$entry')
server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(server)
routes = sorted({r.path for r in server.app.routes if r.path.startswith('/inference')})
print('imports ok: cosyvoice from', os.path.dirname(cosyvoice.__file__), '; CosyVoice2:', cli.CosyVoice2.__name__,
      '; server routes:', ' '.join(routes), '(triton hidden: no GPU)' if $hide else '')
")

echo "== the entry point's --help, as cosyinstall would start it (cwd: the app root), offline"
(cd "$work/box" && unshare -n .venv/bin/python -c "$prelude
import runpy
sys.argv = ['$entry', '--help']
runpy.run_path('$entry', run_name='__main__')
")
t3=$(date +%s)
du -sh "$work/dist/offline_packages.zip" "$work/box/.venv" | sed 's/^/  /'
echo "real_app: ok: pack $((t1 - t0)) s, apply $((t2 - t1)) s, imports and --help $((t3 - t2)) s"
[ "${KEEP:-0}" = 1 ] || rm -rf "$work/dist" "$work/box" "$work/manifest"
