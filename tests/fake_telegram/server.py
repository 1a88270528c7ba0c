"""HTTP side: aiohttp.web on loopback, routing ``/bot<TOKEN>/<method>`` to the methods."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, NoReturn

from aiohttp import BodyPartReader, web

from .faults import Fault, Faults
from .methods import METHODS, ApiError, Call, DropConnection, Upload, decode_params
from .state import RecordedRequest, State, UploadInfo

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[^/]+)$")
_TOKEN_SHAPE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{30,}$")


def _seconds(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _answer(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _failure(error: ApiError) -> web.Response:
    body: dict[str, Any] = {
        "ok": False,
        "error_code": error.status,
        "description": error.description,
    }
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": _seconds(error.retry_after)}
    return web.json_response(body, status=error.status)


def _fault_error(fault: Fault) -> ApiError:
    if fault.kind == "retry_after":
        seconds = _seconds(fault.retry_after)
        return ApiError(429, f"Too Many Requests: retry after {seconds}", fault.retry_after)
    return ApiError(fault.status, fault.description)


async def _read_params(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    raw: dict[str, Any] = dict(request.query)
    uploads: list[Upload] = []
    if not request.body_exists:
        return raw, uploads
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "Bad Request: the request body must be a JSON object")
        raw.update(body)
    elif request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                data = bytes(await part.read())
                ctype = part.headers.get("Content-Type")
                uploads.append(Upload(part.name, part.filename, ctype, data))
            else:
                raw[part.name] = await part.text()
    else:
        raw.update(await request.post())
    return raw, uploads


def _drop(request: web.Request) -> NoReturn:
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


class BotApiServer:
    """Serves the Bot API for one bot token on 127.0.0.1 and a free port."""

    def __init__(self, state: State, faults: Faults, token: str) -> None:
        self.state = state
        self.faults = faults
        self.token = token
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        self.state.closed = True
        await self.state.changed()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = _PATH.match(request.path)
        if match is None:
            return _failure(ApiError(404, "Not Found"))
        token, name = match["token"], match["method"]
        entry = METHODS.get(name.lower())
        record = RecordedRequest(
            method=entry[0] if entry else name,
            params={},
            files=[],
            at=asyncio.get_running_loop().time(),
        )
        self.state.requests.append(record)
        await self.state.changed()
        try:
            response = await self._process(request, token, record)
            record.status = response.status
            return response
        except ApiError as error:
            record.status, record.description = error.status, error.description
            return _failure(error)
        except asyncio.CancelledError:
            record.status, record.fault = 0, record.fault or "cancelled"
            raise
        except Exception as exc:
            log.exception("fake Telegram failed on %s", record.method)
            record.status, record.description = 500, repr(exc)
            return _failure(ApiError(500, f"Internal Server Error: {exc!r}"))
        finally:
            await self.state.changed()

    async def _process(
        self, request: web.Request, token: str, record: RecordedRequest
    ) -> web.Response:
        if token != self.token:
            if _TOKEN_SHAPE.match(token):
                raise ApiError(401, "Unauthorized")
            raise ApiError(404, "Not Found")
        raw, uploads = await _read_params(request)
        params = decode_params(raw)
        record.params = params
        record.files = [UploadInfo(u.field, u.filename, len(u.data)) for u in uploads]
        if self.state.offline:
            record.fault = "offline"
            _drop(request)
        delay, fault = self.faults.take(record.method, params)
        if delay:
            record.fault = "delay"
            await asyncio.sleep(delay)
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "drop":
                _drop(request)
            raise _fault_error(fault)
        entry = METHODS.get(record.method.lower())
        if entry is None:
            raise ApiError(404, "Not Found")
        try:
            result = await entry[1](Call(self.state, params, uploads))
        except DropConnection:
            record.fault = "offline"
            _drop(request)
        return _answer(result)
