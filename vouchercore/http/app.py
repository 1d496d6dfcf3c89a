"""The ASGI application: routes, authentication, limits, errors, and how the engine is called.

Every endpoint is one small handler: read the request (:mod:`vouchercore.http.bodies`), call
one or two engine verbs, answer Voucherify's JSON (:mod:`vouchercore.http.shapes`). The
plumbing around the handlers:

- **Authentication** (:class:`_Auth`, pure ASGI, before routing): ``X-App-Id`` and
  ``X-App-Token`` must both match, compared with :func:`hmac.compare_digest`; otherwise 401.
  The credentials are never logged.
- **Limits**: a JSON body over ``max_body_bytes``, a CSV upload over ``max_upload_bytes``, a
  query string over :data:`~vouchercore.http.bodies.MAX_QUERY_STRING` bytes or a query value
  over :data:`~vouchercore.http.bodies.MAX_QUERY_VALUE` characters is refused (400) before
  the engine is called.
- **Errors**: a :class:`~vouchercore.errors.VoucherError` is answered with Voucherify's error
  object and status (a ``storage_error`` without the driver's text, which is logged); an
  unknown route 404, a wrong method 405; anything unexpected 500 with a request id that the
  log line (with the traceback) carries too. No traceback or driver message is ever sent.
- **Calling the engine**: on the in-memory store, straight from the async handler (a call
  takes microseconds); on any other store, in a worker thread bounded by a
  :class:`anyio.CapacityLimiter` (``threads``), so a slow database never blocks the event
  loop. Exports and CSV imports run on the jobs' own threads (:mod:`vouchercore.http.jobs`).
- **The point-of-sale fast path** (:class:`_Application`): ``GET /v1/vouchers/{code}``,
  ``POST /v1/validations`` and ``POST /v1/redemptions`` are answered before Starlette's
  middleware and router, with the same checks, handlers, errors and answers;
  ``benchmarks/bench_http.py`` measures them.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import io
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vouchercore.domain.values import shown
from vouchercore.engine import Engine
from vouchercore.errors import InvalidPayload, NotFound, StorageError, VoucherError
from vouchercore.http import bodies, jobs, shapes
from vouchercore.stores.memory import MemoryStore

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_THREADS",
    "create_app",
    "from_environment",
]

#: The largest JSON request body (bytes).
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
#: The largest CSV upload (bytes).
DEFAULT_MAX_UPLOAD_BYTES: Final = 64 * 1024 * 1024
#: How many engine calls run at once in worker threads (SQL stores).
DEFAULT_THREADS: Final = 8

_LOG: Final = logging.getLogger("vouchercore.http")
P = ParamSpec("P")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    """The request body passed its cap."""


class _Server:
    """What the handlers share: the engine, the limits, the jobs, and how to call the engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        threads: int,
        jobs_dir: str | None,
        close_engine: bool,
    ) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.jobs = jobs.Jobs(jobs_dir)
        self.close_engine = close_engine
        self.direct = isinstance(engine.store, MemoryStore)
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._closed = False

    async def call(self, verb: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``verb(*args, **kwargs)``: straight on the in-memory store, else in a worker thread
        (at most ``threads`` at once)."""
        if self.direct:
            return verb(*args, **kwargs)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._threads)
        return await anyio.to_thread.run_sync(
            functools.partial(verb, *args, **kwargs), limiter=self._limiter
        )

    def close(self) -> None:
        """Stop and join the jobs, then close the engine (when the app owns it); once."""
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        if self.close_engine:
            self.engine.close()
            _LOG.info("vouchercore: engine closed")


# --- responses ----------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    # json.dumps with its default arguments runs the cached C encoder: the fastest form
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json")


def _request_id() -> str:
    return "v-" + secrets.token_hex(10)


def _error_response(problem: VoucherError, request_id: str | None = None) -> Response:
    request_id = request_id or _request_id()
    if isinstance(problem, StorageError):  # its message carries the driver's text: log it
        _LOG.error("request %s: %s", request_id, problem)
        problem = StorageError(
            f"the store failed; the server log names request {request_id}",
            resource_id=problem.resource_id,
            resource_type=problem.resource_type,
        )
    return _json(shapes.error(problem, request_id), problem.code)


def _plain_error(status: int, key: str, message: str, request_id: str | None = None) -> Response:
    body = {
        "code": status,
        "key": key,
        "message": message,
        "details": None,
        "request_id": request_id or _request_id(),
        "resource_id": None,
        "resource_type": None,
    }
    return _json(body, status)


def _unexpected(method: str, path: str, problem: BaseException) -> Response:
    request_id = _request_id()
    _LOG.error(
        "request %s (%s %s) failed unexpectedly",
        request_id,
        method,
        path,
        exc_info=(type(problem), problem, problem.__traceback__),
    )
    return _plain_error(
        500,
        "internal_error",
        f"the server failed unexpectedly; the server log names request {request_id}",
        request_id,
    )


_HTTP_KEYS: Final = {404: "not_found", 405: "method_not_allowed", 400: "invalid_payload"}


def _http_error(status: int, detail: str) -> Response:
    key = _HTTP_KEYS.get(status, "error")
    message = {404: "no such resource", 405: "method not allowed"}.get(status, detail)
    return _plain_error(status, key, message)


def _failure(problem: Exception, method: str, path: str) -> Response:
    """The error object answering a request whose handler raised *problem*."""
    if isinstance(problem, VoucherError):
        return _error_response(problem)
    if isinstance(problem, _TooLarge):
        return _error_response(InvalidPayload(str(problem)))
    if isinstance(problem, HTTPException):  # the multipart parser's refusals
        return _http_error(problem.status_code, problem.detail)
    if isinstance(problem, ClientDisconnect):  # nobody reads the answer
        return _plain_error(400, "invalid_payload", "the client went away")
    return _unexpected(method, path, problem)


def _check_query(scope: Scope) -> None:
    """Refuse a query string over :data:`~vouchercore.http.bodies.MAX_QUERY_STRING` bytes."""
    if len(scope.get("query_string", b"")) > bodies.MAX_QUERY_STRING:
        raise InvalidPayload(f"the query string is longer than {bodies.MAX_QUERY_STRING:,} bytes")


# --- the endpoint wrapper -----------------------------------------------------------------------


def _endpoint(
    work: Callable[[_Server, Request], Awaitable[Response]],
) -> Callable[[_Server], Handler]:
    """Make *work* a Starlette endpoint of the server: the query string capped, and every
    failure answered with an error object."""

    def bind(server: _Server) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                _check_query(request.scope)
                return await work(server, request)
            except Exception as problem:
                return _failure(problem, request.method, request.url.path)

        return endpoint

    return bind


async def _body(server: _Server, request: Request) -> Any:
    """The request's JSON body (None when empty), read up to ``max_body_bytes``."""
    return await _read_body(server, request.headers.get("content-length"), request.receive)


async def _read_body(server: _Server, declared: str | None, receive: Receive) -> Any:
    """The JSON body *receive* gives (None when empty), read up to ``max_body_bytes``;
    *declared* is the ``Content-Length`` header, if any."""
    cap = server.max_body_bytes
    _check_length(declared, cap, "the request body")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"the request body is larger than {cap:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return bodies.parse_json(chunks[0] if len(chunks) == 1 else b"".join(chunks))


def _check_length(declared: str | None, cap: int, what: str) -> None:
    """Refuse a declared ``Content-Length`` (*declared*) over *cap* before reading anything."""
    if declared is None:
        return
    if not declared.isascii() or not declared.isdigit():
        raise InvalidPayload(f"the Content-Length header is not a number: {shown(declared)}")
    if int(declared) > cap:
        raise _TooLarge(f"{what} is larger than {cap:,} bytes")


def _code(request: Request, name: str = "code") -> str:
    value: str = request.path_params[name]
    return value


def _query(request: Request) -> Mapping[str, str]:
    return request.query_params


# --- vouchers -----------------------------------------------------------------------------------


async def _get_voucher(server: _Server, code: str) -> dict[str, Any]:
    return shapes.voucher(await server.call(server.engine.get_voucher, code))


@_endpoint
async def get_voucher(server: _Server, request: Request) -> Response:
    """``GET /v1/vouchers/{code}``."""
    return _json(await _get_voucher(server, _code(request)))


@_endpoint
async def delete_voucher(server: _Server, request: Request) -> Response:
    """``DELETE /v1/vouchers/{code}[?force=true]``: 204."""
    force = bodies.query_bool(_query(request), "force")
    await server.call(server.engine.delete_voucher, _code(request), force=force)
    return Response(status_code=204)


@_endpoint
async def create_voucher(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}``: create a voucher with this code."""
    code = _code(request)
    kwargs = bodies.create_kwargs(await _body(server, request), code)
    made = await server.call(server.engine.create_voucher, code, **kwargs)
    return _json(shapes.voucher(made))


@_endpoint
async def generate_voucher(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers`` (and ``/v1/vouchers/``): create a voucher with the code given,
    or a generated one (``code_config``: length, charset, prefix, postfix, pattern)."""
    code, config, kwargs = bodies.generate_kwargs(await _body(server, request))
    engine = server.engine
    if config is None:
        made = await server.call(engine.create_voucher, code, **kwargs)
        return _json(shapes.voucher(made))
    report = await server.call(engine.generate_vouchers, 1, **config, **kwargs)
    made = await server.call(engine.get_voucher, report.codes[0])
    return _json(shapes.voucher(made))


@_endpoint
async def update_voucher(server: _Server, request: Request) -> Response:
    """``PUT /v1/vouchers/{code}``: only ``active`` can change (enable or disable); any other
    field with a value is refused (the engine has no other update verb)."""
    code = _code(request)
    active = bodies.update_active(await _body(server, request), code)
    engine = server.engine
    if active is None:
        found = await server.call(engine.get_voucher, code)
    elif active:
        found = await server.call(engine.enable_voucher, code)
    else:
        found = await server.call(engine.disable_voucher, code)
    return _json(shapes.voucher(found))


@_endpoint
async def enable_voucher(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/enable``."""
    return _json(shapes.voucher(await server.call(server.engine.enable_voucher, _code(request))))


@_endpoint
async def disable_voucher(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/disable``."""
    return _json(shapes.voucher(await server.call(server.engine.disable_voucher, _code(request))))


def _idempotency_key(request: Request) -> str | None:
    return request.headers.get("idempotency-key")


@_endpoint
async def update_balance(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/balance``: add or remove gift credits or loyalty points."""
    kwargs = bodies.balance_kwargs(await _body(server, request))
    amount = kwargs.pop("amount")
    update = await server.call(
        server.engine.update_voucher_balance,
        _code(request),
        amount,
        idempotency_key=_idempotency_key(request),
        **kwargs,
    )
    return _json(shapes.balance_update(update))


@_endpoint
async def list_transactions(server: _Server, request: Request) -> Response:
    """``GET /v1/vouchers/{code}/transactions`` (``limit``, ``page``, ``order``,
    ``starting_after_id``)."""
    query = _query(request)
    kwargs: dict[str, Any] = {}
    limit = bodies.query_int(query, "limit")
    if limit is not None:
        kwargs["limit"] = limit
    page = bodies.query_int(query, "page")
    if page is not None:
        kwargs["page"] = page
    order = bodies.query_text(query, "order")
    if order is not None:
        kwargs["order"] = order
    after = bodies.query_text(query, "starting_after_id")
    if after is not None:
        kwargs["starting_after_id"] = after
    found = await server.call(server.engine.list_voucher_transactions, _code(request), **kwargs)
    return _json(shapes.transaction_page(found))


@_endpoint
async def release_session(server: _Server, request: Request) -> Response:
    """``DELETE /v1/vouchers/{code}/sessions/{sessionKey}``: 204."""
    await server.call(
        server.engine.release_validation_session, _code(request), _code(request, "key")
    )
    return Response(status_code=204)


@_endpoint
async def voucher_redemptions(server: _Server, request: Request) -> Response:
    """``GET /v1/vouchers/{code}/redemption``: the voucher's redemption log."""
    code = _code(request)
    found = await server.call(server.engine.get_voucher, code)
    entries = await server.call(server.engine.list_redemptions, found.id)
    return _json(shapes.voucher_redemptions(found, entries))


# --- validations and redemptions ----------------------------------------------------------------


async def _validate_stacked(server: _Server, payload: Any) -> dict[str, Any]:
    kwargs = bodies.stacked_kwargs(payload)
    engine = server.engine
    result = await server.call(
        engine.validate_stacked_discounts, kwargs.pop("redeemables"), **kwargs
    )
    return shapes.stacked_validation(result, engine.stacking_rules)


async def _redeem_stacked(server: _Server, payload: Any, idempotency_key: str | None) -> bytes:
    kwargs = bodies.stacked_kwargs(payload)
    stacked = await server.call(
        server.engine.redeem_stacked_discounts,
        kwargs.pop("redeemables"),
        idempotency_key=idempotency_key,
        **kwargs,
    )
    return json.dumps(shapes.stacked_redemption(stacked)).encode()


@_endpoint
async def validate_stacked(server: _Server, request: Request) -> Response:
    """``POST /v1/validations``: 200 whether valid or not."""
    return _json(await _validate_stacked(server, await _body(server, request)))


@_endpoint
async def redeem_stacked(server: _Server, request: Request) -> Response:
    """``POST /v1/redemptions``: all the redeemables at once, or none (the error of the first
    one that does not apply)."""
    payload = await _body(server, request)
    text = await _redeem_stacked(server, payload, _idempotency_key(request))
    return Response(text, media_type="application/json")


@_endpoint
async def legacy_validate(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/validate`` (the npm SDK 2.9.0's ``validateVoucher``)."""
    kwargs = bodies.legacy_kwargs(await _body(server, request))
    engine = server.engine
    result = await server.call(engine.validate_voucher, _code(request), **kwargs)
    found = None
    if result.voucher_id is not None:
        with contextlib.suppress(NotFound):  # deleted since: the answer stands without it
            found = await server.call(engine.get_voucher, result.voucher_id)
    return _json(shapes.legacy_validation(result, found))


@_endpoint
async def legacy_redeem(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/redemption`` (the npm SDK 2.9.0's ``redemptions.redeem``):
    the redemption, with the voucher as it is after it."""
    kwargs = bodies.legacy_kwargs(await _body(server, request))
    if "session" in kwargs:
        session = kwargs.pop("session")
        kwargs["session_key"] = session.get("key") if isinstance(session, dict) else session
    engine = server.engine
    made = await server.call(
        engine.redeem_voucher,
        _code(request),
        idempotency_key=_idempotency_key(request),
        **kwargs,
    )
    voucher_object = None
    with contextlib.suppress(NotFound):  # deleted since: the short voucher object then
        voucher_object = shapes.voucher(await server.call(engine.get_voucher, made.voucher_id))
    return _json(shapes.redemption(made, voucher_object))


@_endpoint
async def get_redemption(server: _Server, request: Request) -> Response:
    """``GET /v1/redemptions/{id}``: a single redemption (or a child), or a stacked one's
    parent."""
    engine = server.engine
    redemption_id = _code(request, "redemption_id")
    try:
        found = await server.call(engine.get_redemption, redemption_id)
    except NotFound:
        parent = await server.call(engine.get_parent_redemption, redemption_id)
        return _json(shapes.parent_redemption(parent))
    return _json(shapes.redemption(found))


async def _reason(server: _Server, request: Request) -> str | None:
    query_reason = bodies.query_text(_query(request), "reason")
    return bodies.rollback_reason(query_reason, await _body(server, request))


@_endpoint
async def rollback(server: _Server, request: Request) -> Response:
    """``POST /v1/redemptions/{id}/rollback`` (``reason`` in the query or the body): a single
    redemption, or a whole stacked one given its parent's id (answered with the parent's
    rollback)."""
    engine = server.engine
    redemption_id = _code(request, "redemption_id")
    reason = await _reason(server, request)
    key = _idempotency_key(request)
    try:
        await server.call(engine.get_parent_redemption, redemption_id)
    except NotFound:
        single = await server.call(
            engine.rollback_redemption, redemption_id, reason=reason, idempotency_key=key
        )
        return _json(shapes.redemption_rollback(single))
    whole = await server.call(
        engine.rollback_stacked_redemptions, redemption_id, reason=reason, idempotency_key=key
    )
    return _json(shapes.parent_rollback(whole.parent_rollback))


@_endpoint
async def rollback_stacked(server: _Server, request: Request) -> Response:
    """``POST /v1/redemptions/{parentRedemptionId}/rollbacks``: every child and the parent."""
    engine = server.engine
    parent_id = _code(request, "redemption_id")
    reason = await _reason(server, request)
    parent = await server.call(engine.get_parent_redemption, parent_id)
    whole = await server.call(
        engine.rollback_stacked_redemptions,
        parent_id,
        reason=reason,
        idempotency_key=_idempotency_key(request),
    )
    return _json(shapes.stacked_rollback(whole, parent.order))


# --- exports and async actions ------------------------------------------------------------------


@_endpoint
async def export_transactions(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/{code}/transactions/export``: an export object (``SCHEDULED``);
    the file is written by a job and served by ``GET /v1/exports/{id}?token=…``."""
    order, columns = bodies.export_parameters(await _body(server, request))
    engine = server.engine
    found = await server.call(engine.get_voucher, _code(request))
    record = await anyio.to_thread.run_sync(
        jobs.new_export, server.jobs, engine, found.id, order, columns
    )
    url = f"{str(request.base_url).rstrip('/')}/v1/exports/{record['id']}?token={record['_token']}"
    answer = jobs.public(record)
    server.jobs.submit(functools.partial(jobs.run_export, server.jobs, engine, record, url))
    return _json(answer)


@_endpoint
async def get_export(server: _Server, request: Request) -> Response:
    """``GET /v1/exports/{id}``: the export object; with ``?token=…`` (its ``result.url``)
    the file itself, as ``text/plain`` CSV (what the Python SDK's ``download_export`` reads).
    Unlike Voucherify's pre-signed download host, the download needs the app's credentials
    too: the token only picks the file."""
    export_id = _code(request, "export_id")
    record = await anyio.to_thread.run_sync(server.jobs.load, export_id)
    if record is None:
        raise NotFound(
            f"no export has id {shown(export_id)}", resource_id=export_id, resource_type="export"
        )
    token = bodies.query_text(_query(request), "token")
    if token is None:
        return _json(jobs.public(record))
    if not hmac.compare_digest(token.encode(), str(record["_token"]).encode()):
        raise NotFound(
            f"export {export_id} has no file for this token",
            resource_id=export_id,
            resource_type="export",
        )
    target = server.jobs.path(export_id, ".csv")
    if record["status"] != "DONE" or target is None:
        raise NotFound(
            f"export {export_id} has no file yet (status {record['status']})",
            resource_id=export_id,
            resource_type="export",
        )
    return FileResponse(
        target,
        media_type="text/plain; charset=utf-8",
        filename=f"{export_id}.csv",
        content_disposition_type="attachment",
    )


@_endpoint
async def delete_export(server: _Server, request: Request) -> Response:
    """``DELETE /v1/exports/{id}``: the export and its file removed; 204."""
    export_id = _code(request, "export_id")
    if not await anyio.to_thread.run_sync(server.jobs.remove, export_id):
        raise NotFound(
            f"no export has id {shown(export_id)}", resource_id=export_id, resource_type="export"
        )
    return Response(status_code=204)


def _capped(receive: Receive, cap: int) -> Receive:
    """*receive*, raising :class:`_TooLarge` once the body passes *cap* bytes."""
    size = 0

    async def capped() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > cap:
            raise _TooLarge(f"the uploaded file is larger than {cap:,} bytes")
        return message

    return capped


@_endpoint
async def import_csv(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/importCSV`` (multipart, part ``file``): ``202 {async_action_id}``;
    the import runs as a job, followed by ``GET /v1/async-actions/{id}``."""
    cap = server.max_upload_bytes
    _check_length(request.headers.get("content-length"), cap, "the uploaded file")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidPayload("send the CSV file as multipart/form-data, in the part 'file'")
    upload = Request(request.scope, _capped(request.receive, cap))
    async with upload.form(max_files=1, max_fields=8, max_part_size=cap) as form:
        file = form.get("file")
        if file is None:
            raise InvalidPayload("the multipart body has no part 'file' (the CSV file)")
        # a part without a filename arrives as text: its content is the file all the same
        content = file.file if isinstance(file, UploadFile) else io.BytesIO(file.encode())
        record = await anyio.to_thread.run_sync(
            jobs.new_import, server.jobs, server.engine, _request_id()
        )
        kept = await anyio.to_thread.run_sync(server.jobs.keep_upload, content, record["id"])
    server.jobs.submit(functools.partial(jobs.run_import, server.jobs, server.engine, record, kept))
    return _json({"async_action_id": record["id"]}, 202)


@_endpoint
async def get_async_action(server: _Server, request: Request) -> Response:
    """``GET /v1/async-actions/{id}``: status, progress and, when done, the result (per-row
    failures of an import)."""
    action_id = _code(request, "action_id")
    record = await anyio.to_thread.run_sync(server.jobs.load, action_id)
    if record is None:
        raise NotFound(
            f"no async action has id {shown(action_id)}",
            resource_id=action_id,
            resource_type="async_action",
        )
    answer = jobs.public(record)
    if answer.get("result") is None:  # the spec's result is an object, never null: absent
        del answer["result"]  # until the action is done
    return _json(answer)


@_endpoint
async def json_import(server: _Server, request: Request) -> Response:
    """``POST /v1/vouchers/import`` (a JSON list of vouchers): not supported; it is routed so
    that no voucher named ``import`` is made by mistake."""
    raise InvalidPayload(
        "POST /v1/vouchers/import (JSON) is not supported by vouchercore: use "
        "POST /v1/vouchers/importCSV"
    )


# --- authentication -----------------------------------------------------------------------------


class _Credentials:
    """The app's ``X-App-Id`` and ``X-App-Token``, and the check of a request's."""

    def __init__(self, app_id: str, app_token: str) -> None:
        self._id = app_id.encode()
        self._token = app_token.encode()

    def match(self, given_id: bytes, given_token: bytes) -> bool:
        """Whether both match, compared in constant time."""
        # both compared, always: the time taken says nothing about which one was wrong
        same_id = hmac.compare_digest(given_id, self._id)
        same_token = hmac.compare_digest(given_token, self._token)
        return same_id and same_token


def _unauthorized() -> Response:
    return _plain_error(
        401, "unauthorized", "Unauthorized: send the X-App-Id and X-App-Token headers"
    )


class _Auth:
    """Pure ASGI middleware: 401 unless ``X-App-Id`` and ``X-App-Token`` both match."""

    def __init__(self, app: ASGIApp, credentials: _Credentials) -> None:
        self.app = app
        self._credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id = given_token = b""
        for name, value in scope["headers"]:
            if name == b"x-app-id":
                given_id = value
            elif name == b"x-app-token":
                given_token = value
        if self._credentials.match(given_id, given_token):
            await self.app(scope, receive, send)
            return
        await _unauthorized()(scope, receive, send)


# --- the point-of-sale fast path ----------------------------------------------------------------

_GET_VOUCHER: Final = 0
_VALIDATE: Final = 1
_REDEEM: Final = 2
_VOUCHERS_PREFIX: Final = "/v1/vouchers/"
_JSON_TYPE: Final = (b"content-type", b"application/json")


class _Application(Starlette):
    """Starlette, with the point-of-sale calls — ``GET /v1/vouchers/{code}``,
    ``POST /v1/validations``, ``POST /v1/redemptions`` — answered before its middleware and
    router.

    They are most of a till's traffic, and Starlette's layers (error middleware, the
    authentication middleware, the exception middleware, matching the routes one by one, the
    request and response objects) cost more than the handlers. The fast path does what those
    layers do for these three routes, in one pass over the headers: the same credentials
    check (401), query-string and body caps, error objects (:func:`_failure`) and handlers
    (:func:`_get_voucher`, :func:`_validate_stacked`, :func:`_redeem_stacked`), and the same
    answer bytes and headers. Every other request — and every request of an application
    mounted under a path prefix (``root_path``) — goes through Starlette as before.
    """

    fast_server: _Server
    fast_credentials: _Credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method = scope["method"]
            path: str = scope["path"]
            kind = -1
            code = ""
            if method == "POST":
                if path == "/v1/redemptions":
                    kind = _REDEEM
                elif path == "/v1/validations":
                    kind = _VALIDATE
            elif method == "GET" and path.startswith(_VOUCHERS_PREFIX):
                code = path[len(_VOUCHERS_PREFIX) :]
                if code and "/" not in code:
                    kind = _GET_VOUCHER
            if kind >= 0:
                await self._answer(kind, code, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(
        self, kind: int, code: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        given_id = given_token = b""
        declared: bytes | None = None
        key: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-app-id":
                given_id = value
            elif name == b"x-app-token":
                given_token = value
            elif name == b"content-length":
                if declared is None:
                    declared = value
            elif name == b"idempotency-key" and key is None:
                key = value
        if not self.fast_credentials.match(given_id, given_token):
            await _unauthorized()(scope, receive, send)
            return
        server = self.fast_server
        try:
            _check_query(scope)
            if kind == _GET_VOUCHER:
                body = json.dumps(await _get_voucher(server, code)).encode()
            else:
                length = None if declared is None else declared.decode("latin-1")
                payload = await _read_body(server, length, receive)
                if kind == _VALIDATE:
                    body = json.dumps(await _validate_stacked(server, payload)).encode()
                else:
                    idempotency_key = None if key is None else key.decode("latin-1")
                    body = await _redeem_stacked(server, payload, idempotency_key)
        except Exception as problem:
            await _failure(problem, scope["method"], scope["path"])(scope, receive, send)
            return
        # what _json's Response sends: the same status, headers and body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON_TYPE],
            }
        )
        await send({"type": "http.response.body", "body": body})


# --- the application ----------------------------------------------------------------------------


def create_app(
    engine: Engine,
    *,
    app_id: str,
    app_token: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    threads: int = DEFAULT_THREADS,
    jobs_dir: str | None = None,
    close_engine: bool = True,
) -> Starlette:
    """A Voucherify-compatible HTTP API over *engine*, as a Starlette (ASGI) application.

    Args:
        engine: the voucher book to serve.
        app_id, app_token: the credentials every request must carry (``X-App-Id``,
            ``X-App-Token``); both non-empty.
        max_body_bytes: the largest JSON request body (default 4 MiB).
        max_upload_bytes: the largest CSV upload (default 64 MiB).
        threads: how many engine calls run at once in worker threads (SQL stores; the
            in-memory store is called straight from the event loop).
        jobs_dir: where exports and async actions are kept (give server processes that share
            a store the same directory); default a private temporary directory.
        close_engine: close *engine* at the application's lifespan shutdown (after its jobs
            stopped). An application mounted inside another one gets no lifespan events: its
            owner closes the engine.

    Raises:
        InvalidPayload: empty credentials, or a limit that is not a positive int.
    """
    for name, value in (("app_id", app_id), ("app_token", app_token)):
        if not isinstance(value, str) or not value:
            raise InvalidPayload(f"{name} must be a non-empty string")
    for name, limit in (
        ("max_body_bytes", max_body_bytes),
        ("max_upload_bytes", max_upload_bytes),
        ("threads", threads),
    ):
        if type(limit) is not int or limit < 1:
            raise InvalidPayload(f"{name} must be a positive int, got {shown(limit)}")
    server = _Server(
        engine,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=max_upload_bytes,
        threads=threads,
        jobs_dir=jobs_dir,
        close_engine=close_engine,
    )

    def route(path: str, work: Callable[[_Server], Handler], method: str) -> Route:
        return Route(path, work(server), methods=[method])

    routes = [  # matched in this order: the point-of-sale calls first
        route("/v1/validations", validate_stacked, "POST"),
        route("/v1/redemptions", redeem_stacked, "POST"),
        route("/v1/vouchers/{code}", get_voucher, "GET"),
        route("/v1/vouchers", generate_voucher, "POST"),
        route("/v1/vouchers/", generate_voucher, "POST"),
        route("/v1/vouchers/importCSV", import_csv, "POST"),
        route("/v1/vouchers/import", json_import, "POST"),
        route("/v1/vouchers/{code}", create_voucher, "POST"),
        route("/v1/vouchers/{code}", update_voucher, "PUT"),
        route("/v1/vouchers/{code}", delete_voucher, "DELETE"),
        route("/v1/vouchers/{code}/enable", enable_voucher, "POST"),
        route("/v1/vouchers/{code}/disable", disable_voucher, "POST"),
        route("/v1/vouchers/{code}/balance", update_balance, "POST"),
        route("/v1/vouchers/{code}/transactions", list_transactions, "GET"),
        route("/v1/vouchers/{code}/transactions/export", export_transactions, "POST"),
        route("/v1/vouchers/{code}/sessions/{key}", release_session, "DELETE"),
        route("/v1/vouchers/{code}/validate", legacy_validate, "POST"),
        route("/v1/vouchers/{code}/redemption", legacy_redeem, "POST"),
        route("/v1/vouchers/{code}/redemption", voucher_redemptions, "GET"),
        route("/v1/redemptions/{redemption_id}", get_redemption, "GET"),
        route("/v1/redemptions/{redemption_id}/rollback", rollback, "POST"),
        route("/v1/redemptions/{redemption_id}/rollbacks", rollback_stacked, "POST"),
        route("/v1/exports/{export_id}", get_export, "GET"),
        route("/v1/exports/{export_id}", delete_export, "DELETE"),
        route("/v1/async-actions/{action_id}", get_async_action, "GET"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.close)

    async def http_error(_request: Request, problem: Exception) -> Response:
        assert isinstance(problem, HTTPException)
        return _http_error(problem.status_code, problem.detail)

    async def unexpected(request: Request, problem: Exception) -> Response:
        return _unexpected(request.method, request.url.path, problem)

    credentials = _Credentials(app_id, app_token)
    app = _Application(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        middleware=[],
    )
    app.fast_server = server
    app.fast_credentials = credentials
    app.router.redirect_slashes = False
    app.add_middleware(_Auth, credentials=credentials)
    app.state.vouchercore_close = server.close
    return app


def from_environment() -> Starlette:
    """The application configured by environment variables, for ASGI servers that import a
    factory — several worker processes on one shared store, for example::

        VOUCHERCORE_STORE=postgresql://app@db/vouchers VOUCHERCORE_APP_ID=… \\
        VOUCHERCORE_APP_TOKEN=… VOUCHERCORE_JOBS_DIR=/srv/vouchercore-jobs \\
        uvicorn --factory vouchercore.http:from_environment --workers 4

    ``VOUCHERCORE_STORE`` (default ``memory://``: each process would have its own book),
    ``VOUCHERCORE_APP_ID`` and ``VOUCHERCORE_APP_TOKEN`` (required),
    ``VOUCHERCORE_JOBS_DIR`` (give every process the same one) and ``VOUCHERCORE_THREADS``.

    Raises:
        InvalidPayload: a credential missing, or a bad number of threads.
    """
    environ = os.environ
    app_id = environ.get("VOUCHERCORE_APP_ID", "")
    app_token = environ.get("VOUCHERCORE_APP_TOKEN", "")
    if not app_id or not app_token:
        raise InvalidPayload("set VOUCHERCORE_APP_ID and VOUCHERCORE_APP_TOKEN")
    threads = environ.get("VOUCHERCORE_THREADS", str(DEFAULT_THREADS))
    if not threads.isascii() or not threads.isdigit():
        raise InvalidPayload(f"VOUCHERCORE_THREADS must be a positive int, got {shown(threads)}")
    return create_app(
        Engine(environ.get("VOUCHERCORE_STORE", "memory://")),
        app_id=app_id,
        app_token=app_token,
        threads=int(threads),
        jobs_dir=environ.get("VOUCHERCORE_JOBS_DIR") or None,
    )
