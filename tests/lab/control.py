"""The lab's control socket: how code on a simulated host asks the lab to act.

A command inside an SSH session (``reboot``, a correct passphrase, ``disko``) cannot
change stages itself: its process is a child of the sshd it would have to kill. It
sends one JSON line to the lab and reads one JSON line back.
Standard library only: the lab shell imports the client half.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the lab and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline()
    if not line:
        raise ConnectionError("the lab closed the control socket without answering")
    answer: dict[str, Any] = json.loads(line)
    return answer


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    handler: Handler


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline()
        if not line:
            return
        try:
            answer = self.server.handler(json.loads(line))
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")


class ControlServer:
    """Serves the control socket on its own thread until closed."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._server = _Server(str(path), _RequestHandler)
        self._server.handler = handler
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)
