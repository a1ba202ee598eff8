"""The synthesis probe against a real local HTTP server: multipart with a file from the tree, JSON,
and the failures a user must see (status, too few bytes, wrong Content-Type)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

from cosyinstall.artifact import ProbeSpec
from cosyinstall.synth_probe import check_probe, run_probe
from cosyinstall.tree import InstallTree

SEEN: List[dict] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        SEEN.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
        if self.path == "/broken":
            self._send(500, b'{"error": "synthesis failed"}', "application/json")
        else:
            self._send(200, b"RIFF" + body, "audio/wav")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SEEN.clear()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_form_with_a_file_goes_as_multipart_and_passes(tmp_path: Path, port: int) -> None:
    tree = InstallTree(str(tmp_path))
    (tmp_path / "asset").mkdir()
    wav = bytes(range(256)) * 300
    (tmp_path / "asset" / "prompt.wav").write_bytes(wav)
    probe = ProbeSpec.from_dict({"path": "/inference_zero_shot", "form": {"tts_text": "你好", "prompt_text": "希望"},
                                 "files": {"prompt_wav": "asset/prompt.wav"}, "min-bytes": 1000, "expect": "audio/"},
                                "probe")
    result = run_probe(tree, probe, port)
    assert check_probe(result, probe, port, "server.log") is None
    sent = SEEN[-1]
    assert sent["type"].startswith("multipart/form-data; boundary=")
    assert wav in sent["body"] and 'name="prompt_wav"; filename="prompt.wav"'.encode() in sent["body"]
    assert 'name="tts_text"\r\n\r\n你好\r\n'.encode("utf-8") in sent["body"]
    assert result.size == len(sent["body"]) + 4


def test_json_body(tmp_path: Path, port: int) -> None:
    probe = ProbeSpec.from_dict({"path": "/tts_to_audio", "json": {"text": "hi", "language": "zh"}}, "probe")
    result = run_probe(InstallTree(str(tmp_path)), probe, port)
    assert result.status == 200 and SEEN[-1]["type"] == "application/json"
    assert json.loads(SEEN[-1]["body"]) == {"text": "hi", "language": "zh"}


def test_failures_name_the_status_and_the_first_bytes(tmp_path: Path, port: int) -> None:
    tree = InstallTree(str(tmp_path))
    broken = ProbeSpec.from_dict({"path": "/broken", "form": {"text": "hi"}}, "probe")
    error = check_probe(run_probe(tree, broken, port), broken, port, "server.log")
    assert error is not None and error.exit_code == 5
    assert "answered HTTP 500" in error.message and "synthesis failed" in error.message
    short = ProbeSpec.from_dict({"path": "/tts", "form": {"text": "hi"}, "min-bytes": 100000}, "probe")
    error = check_probe(run_probe(tree, short, port), short, port, "server.log")
    assert error is not None and "fewer than the 100000 expected" in error.message
    wrong = ProbeSpec.from_dict({"path": "/tts", "form": {"text": "hi"}, "expect": "audio/mpeg"}, "probe")
    error = check_probe(run_probe(tree, wrong, port), wrong, port, "server.log")
    assert error is not None and "not audio/mpeg" in error.message
