#!/usr/bin/env bash
# The embedded demo end to end: install the tools, pack, apply with no network, ask the
# server for speech, stop it. Needs python3 >= 3.10, a CPython 3.10 somewhere on the box
# (pyenv, conda, /usr/bin), root for `unshare -n`, and the package index for packing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${OUT:-dist}
TO=${TO:-$(mktemp -d)/CosyVoice}
PORT=${PORT:-6008}
[ -x .venv-demo/bin/python ] || "$PY" -m venv .venv-demo
.venv-demo/bin/python -m pip install --quiet -e .
export PATH="$PWD/.venv-demo/bin:$PATH"

echo "== cosybuild pack demo --out $OUT"
cosybuild pack demo --out "$OUT"
(cd "$OUT" && sha256sum -c SHA256SUMS)

echo "== offline: cosyinstall apply, then talk to the server, then stop it"
unshare -n sh -c "
  set -e
  ip link set lo up
  python3 $OUT/cosyinstall.pyz apply --from $OUT --to $TO --port $PORT
  python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:$PORT/api/speakers').read().decode())\"
  python3 -c \"import urllib.request as u; r=u.urlopen('http://127.0.0.1:$PORT/tts', data=b'text=hello'); print('tts:', r.status, r.headers['Content-Type'], len(r.read()), 'bytes')\"
  python3 $OUT/cosyinstall.pyz status --to $TO
  python3 $OUT/cosyinstall.pyz stop --to $TO
"
echo "== demo done: installed tree in $TO"
