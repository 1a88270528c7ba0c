"""The lab's single worker thread: every stage transition of every host runs on it.

One thread means transitions never race each other (a reboot timer against a power-off,
a correct passphrase against a crash). Delayed transitions are timers on the same thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Supervisor:
    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Callable[[], Any], Future[Any]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lab-supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                    not self._queue or self._queue[0][0] > time.monotonic()
                ):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                if self._closed:
                    for _, _, _, future in self._queue:
                        future.cancel()
                    self._queue.clear()
                    return
                _, _, fn, future = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def later(self, delay: float, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the supervisor thread after ``delay`` seconds."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                future.cancel()
                return future
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), fn, future))
            self._cond.notify()
        return future

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the supervisor thread now and wait for its result."""
        if threading.current_thread() is self._thread:
            return fn()
        result: T = self.later(0.0, fn).result(timeout)
        return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
