"""A real OpenSSH server on loopback for upload tests: throwaway host and user keys, its own config.

Also a byte-counting TCP relay, to measure what a client really sends to the server.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from support import free_port


@dataclass
class SshBox:
    port: int
    user: str
    home: Path          # where the tests point uploads (the server is this machine)
    client_config: Path  # pins the host key, names the user key
    proc: subprocess.Popen
    log: Path

    def url(self, folder: Path, port: int | None = None) -> str:
        return "ssh://%s@127.0.0.1:%d%s" % (self.user, port or self.port, folder)

    def args(self) -> list[str]:
        return ["-F", str(self.client_config)]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(base: Path, set_env_path: str | None = None) -> SshBox:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    base.mkdir(parents=True, exist_ok=True)
    _keygen(base / "host_key")
    _keygen(base / "user_key")
    shutil.copy(base / "user_key.pub", base / "authorized_keys")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
    port = free_port()
    lines = [
        "Port %d" % port,
        "ListenAddress 127.0.0.1",
        "HostKey %s" % (base / "host_key"),
        "PidFile %s" % (base / "sshd.pid"),
        "AuthorizedKeysFile %s" % (base / "authorized_keys"),
        "StrictModes no",
        "PermitRootLogin yes",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if set_env_path:
        # SHLVL above 1 keeps this machine's ~/.bashrc (which puts pyenv's shims first) from
        # running for ssh commands, so the box really has only this PATH.
        lines.append("SetEnv PATH=%s SHLVL=5" % set_env_path)
    config = base / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    host_pub = (base / "host_key.pub").read_text().split()
    (base / "known_hosts").write_text("cosybox %s %s\n" % (host_pub[0], host_pub[1]))
    client = base / "ssh_config"
    client.write_text(
        "Host 127.0.0.1\n"
        "  IdentityFile %s\n  IdentitiesOnly yes\n  HostKeyAlias cosybox\n"
        "  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        % (base / "user_key", base / "known_hosts"))
    log = base / "sshd.log"
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
    return SshBox(port, getpass.getuser(), base, client, proc, log)


def stop_sshd(box: SshBox) -> None:
    box.proc.terminate()
    box.proc.wait(timeout=10)


class CountingRelay:
    """Forwards loopback connections to `target_port`, counting the bytes sent client -> server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self._lock = threading.Lock()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self) -> None:
        with self._lock:
            self.sent = 0

    def close(self) -> None:
        self.server.close()
