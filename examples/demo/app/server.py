"""Demo stand-in for CosyVoice's fast_server.py: same flags, same ready line, real HTTP.

It imports packages that came from the bundle (six, idna), reads its model directory, and
synthesises a short tone as WAV for POST /tts, so the whole offline path is exercised.
"""

import argparse
import io
import json
import math
import os
import struct
import sys
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import idna
import six


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    with open(os.path.join(model_dir, "voice.bin"), "rb") as handle:
        weights = handle.read()
    return config, weights


def synthesise(text, config, weights):
    rate = config["sample_rate"]
    frames = io.BytesIO()
    with wave.open(frames, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = bytearray()
        for ch in text[:40]:
            freq = config["base_hz"] + weights[ord(ch) % len(weights)]
            for n in range(rate // 20):
                samples += struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * n / rate)))
        out.writeframes(bytes(samples))
    return frames.getvalue()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50000)
    parser.add_argument("--model_dir", default="pretrained_models/demo-voice")
    parser.add_argument("--speaker_dir", default="asset/speakers")
    args = parser.parse_args()
    config, weights = load_model(args.model_dir)
    speakers = sorted(os.path.splitext(n)[0] for n in os.listdir(args.speaker_dir))

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/":
                page = "<h1>%s</h1><p>six %s, idna %s</p>" % (config["name"], six.__version__, idna.__version__)
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
            elif self.path == "/api/speakers":
                self._send(200, json.dumps(speakers).encode(), "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self):
            if self.path != "/tts":
                self._send(404, b"not found", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8"))
            text = (form.get("text") or [""])[0]
            if not text:
                self._send(400, b"text is required", "text/plain")
                return
            if os.path.exists("BROKEN_SYNTHESIS"):
                # Tests plant this file to imitate a box whose synthesis fails after warm-up.
                self._send(500, b'{"error": "synthesis failed: BROKEN_SYNTHESIS is present"}', "application/json")
                return
            self._send(200, synthesise(text, config, weights), "audio/wav")

        def log_message(self, fmt, *a):
            sys.stdout.write("request: " + (fmt % a) + "\n")

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    print("loaded model %s from %s" % (config["name"], args.model_dir), flush=True)
    print("🚀 FastCosyVoice TTS Server 启动在端口 %d" % args.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
