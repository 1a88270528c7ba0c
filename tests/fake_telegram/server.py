"""HTTP side: aiohttp.web on loopback, routing ``/bot<TOKEN>/<method>`` to the methods."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, NoReturn

from aiohttp import BodyPartReader, web

from bot.core.telegram_limits import check_upload

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
    return web.json_response(error.body(), status=error.status)


def _fault_error(fault: Fault) -> ApiError:
    if fault.kind == "retry_after":
        seconds = _seconds(fault.retry_after)
        return ApiError(429, f"Too Many Requests: retry after {seconds}", fault.retry_after)
    return ApiError(fault.status, fault.description)


async def _read_file(part: BodyPartReader, limit: int) -> tuple[bytes, int]:
    """The part's bytes and size; past ``limit`` the rest is counted and dropped, not kept."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 20):
        size += len(chunk)
        if size <= limit:
            chunks.append(bytes(chunk))
        else:
            chunks.clear()
    return b"".join(chunks), size


async def _read_params(
    request: web.Request, max_file_bytes: int
) -> tuple[dict[str, Any], list[Upload]]:
    """Decode the body; a file over ``max_file_bytes`` keeps its size but not its bytes."""
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
                data, size = await _read_file(part, max_file_bytes)
                ctype = part.headers.get("Content-Type")
                uploads.append(Upload(part.name, part.filename, ctype, data, size))
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
        raw, uploads = await _read_params(request, self.state.max_document_bytes)
        params = decode_params(raw)
        record.params = params
        record.files = [UploadInfo(u.field, u.filename, u.size) for u in uploads]
        # Telegram answers 413 for the whole request, before looking at the method.
        for upload in uploads:
            check_upload(upload.size, self.state.max_document_bytes)
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
            if fault.kind == "garbage":
                return web.Response(text=fault.body, status=fault.status, content_type="text/html")
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
