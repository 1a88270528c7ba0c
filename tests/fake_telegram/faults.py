"""Fault injection: 429, HTTP errors, answers that are not JSON, dropped connections and
delays, per method or for all."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["retry_after", "error", "garbage", "drop", "delay"]
Where = Callable[[Mapping[str, Any]], bool]


@dataclass
class Fault:
    """One rule. ``times=None`` means every matching call; ``hits`` counts applications."""

    kind: FaultKind
    method: str | None
    times: int | None
    retry_after: float = 1
    status: int = 500
    description: str = "Internal Server Error"
    seconds: float = 0.0
    body: str = ""
    where: Where | None = None
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, params: Mapping[str, Any]) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method.lower() != method.lower():
            return False
        return self.where is None or self.where(params)


class Faults:
    """The rule book consulted before every call. ``method=None`` matches every method.

    Rules are applied in the order they were added: all matching ``delay`` rules add up, then
    the first matching terminal rule (``retry_after``, ``error``, ``garbage``, ``drop``)
    answers the call instead of the method. ``where`` filters on the decoded request
    parameters, e.g. ``where=lambda p: p.get("chat_id") == 42``.
    """

    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def _add(self, fault: Fault) -> Fault:
        self.rules.append(fault)
        return fault

    def retry_after(
        self,
        method: str | None = None,
        *,
        seconds: float = 1,
        times: int | None = 1,
        where: Where | None = None,
    ) -> Fault:
        """Answer 429 ``Too Many Requests: retry after N`` with ``parameters.retry_after``.

        Telegram sends whole seconds; a fraction is allowed here to keep tests quick.
        """
        return self._add(Fault("retry_after", method, times, retry_after=seconds, where=where))

    def error(
        self,
        method: str | None = None,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        times: int | None = 1,
        where: Where | None = None,
    ) -> Fault:
        """Answer ``{"ok": false, "error_code": status, "description": description}``."""
        return self._add(
            Fault("error", method, times, status=status, description=description, where=where)
        )

    def garbage(
        self,
        method: str | None = None,
        *,
        body: str,
        status: int = 200,
        times: int | None = 1,
        where: Where | None = None,
    ) -> Fault:
        """Answer ``body`` as it is, not JSON: what a proxy or a broken server in front of
        the Bot API may send (an HTML error page, a cut answer)."""
        return self._add(Fault("garbage", method, times, status=status, body=body, where=where))

    def drop(
        self, method: str | None = None, *, times: int | None = 1, where: Where | None = None
    ) -> Fault:
        """Close the connection without any response (the client sees a network error)."""
        return self._add(Fault("drop", method, times, where=where))

    def delay(
        self,
        method: str | None = None,
        *,
        seconds: float,
        times: int | None = None,
        where: Where | None = None,
    ) -> Fault:
        """Hold matching calls ``seconds`` before handling them (a slow Telegram)."""
        return self._add(Fault("delay", method, times, seconds=seconds, where=where))

    def clear(self) -> None:
        self.rules.clear()

    def take(self, method: str, params: Mapping[str, Any]) -> tuple[float, Fault | None]:
        """Consume the rules matching this call: total delay and the terminal fault, if any."""
        delay = 0.0
        terminal: Fault | None = None
        for rule in self.rules:
            if not rule.matches(method, params):
                continue
            if rule.kind == "delay":
                rule.hits += 1
                delay += rule.seconds
            elif terminal is None:
                rule.hits += 1
                terminal = rule
        return delay, terminal
