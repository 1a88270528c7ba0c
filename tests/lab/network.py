"""Loopback addresses and ports for simulated hosts, and TCP ports a host "serves".

Each host gets its own 127.0.0.N so its ports never clash with other hosts. An address
is leased by binding an abstract Unix socket named after it: another lab in another
process (tests run in parallel by other people) skips it, and the kernel frees the
lease when the process dies, leaving no file behind.
"""

from __future__ import annotations

import itertools
import socket
import threading

_FIRST, _LAST = 10, 254
_counter = itertools.cycle(range(_FIRST, _LAST + 1))
_counter_lock = threading.Lock()


class AddressLease:
    """An exclusive claim on one loopback address for as long as it is held."""

    def __init__(self) -> None:
        for _ in range(_LAST - _FIRST + 1):
            with _counter_lock:
                n = next(_counter)
            address = f"127.0.0.{n}"
            lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                lock.bind(f"\0deploybot-lab/{address}")
            except OSError:
                lock.close()
                continue
            self.address = address
            self._lock = lock
            return
        raise RuntimeError("no free loopback address for a lab host")

    def free_port(self) -> int:
        """A port on this address that nothing listens on now (the kernel picks it)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((self.address, 0))
            port: int = probe.getsockname()[1]
            return port

    def release(self) -> None:
        self._lock.close()


class PortListener:
    """A TCP port that accepts connections and closes them: enough for ``tcp:`` checks."""

    def __init__(self, address: str, port: int) -> None:
        self.port = port
        self._sock = socket.create_server((address, port), reuse_port=False)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(2)
