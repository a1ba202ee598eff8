"""The demo's server through the CLI, offline: start, start again, logs, taken port, stop, restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import free_port, offline, pyz, run

pytestmark = pytest.mark.e2e


def test_start_twice_logs_stop_and_start_again_after_a_crash(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    port = free_port()
    p = " ".join(pyz(dist, ""))
    script = f"""
set -e
{p} apply --no-start --from {dist} --to {to}
{p} start --to {to} --port {port}
{p} start --to {to} --port {port} 2>&1 | sed 's/^/AGAIN: /'
{p} logs --to {to} -n 5 | sed 's/^/LOG: /'
# a "reboot": every process of the server dies at once and the pid file stays behind
sid=$(python3 -c "import json; print(json.load(open('{to}/.cosyinstall/server.pid'))['pid'])")
pkill -9 -s "$sid"
sleep 1
{p} start --to {to} --port {port} | sed 's/^/REBOOT: /'
python3 -c "import urllib.request as u; print('HTTP', u.urlopen('http://127.0.0.1:{port}/').status)"
{p} stop --to {to}
{p} stop --to {to}
"""
    proc = run(offline(script), timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "AGAIN: " in out and "already running" in out
    assert "LOG: " in out and "启动在端口 %d" % port in out
    assert "REBOOT: server ready: http://127.0.0.1:%d/" % port in out
    assert "HTTP 200" in out
    assert "server stopped" in out and "server was not running" in out


def test_taken_port_exits_4_naming_it_before_starting(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    port = free_port()
    p = " ".join(pyz(dist, ""))
    script = f"""
{p} apply --no-start --from {dist} --to {to} >/dev/null || exit 99
python3 -c "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',{port})); s.listen(); time.sleep(30)" &
sleep 1
{p} start --to {to} --port {port}
echo "rc=$?"
kill %1
"""
    proc = run(offline(script), timeout=300)
    assert "rc=4" in proc.stdout, proc.stdout + proc.stderr
    assert "port %d" % port in proc.stderr and "Traceback" not in proc.stderr
    assert not (to / ".cosyinstall" / "server.pid").exists()
