"""A local Vision Events API: a real HTTP server that stores what it receives and plays scripted faults.

Owns: the HTTP side of the emulator (routes E1-E10 of `spec/vision-events-api.md` §1.3, auth and scopes,
the body size limit, fault injection, the `/_emulator/...` control API and a small web page at `/`). The
stored state and the API's rules live in `emulator_store`. Used by tests, demos and `mqtt-bridge emulator`;
must not import the bridge's runtime modules (only `events`, `emulator_store` and the stdlib).

Control API (no auth): `GET|POST|DELETE /_emulator/faults`, `GET /_emulator/events`, `GET /_emulator/stats`,
`GET /_emulator/requests`, `POST /_emulator/use-cases`, `POST /_emulator/reset`.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from mqtt_bridge.devtools.emulator.page import PAGE_HTML
from mqtt_bridge.devtools.emulator.store import (
    ALL_SCOPES,
    IMAGE_CONTENT_TYPES,
    MANAGE_SCOPES,
    READ_SCOPES,
    WRITE_SCOPES,
    EventStore,
    Faults,
    RequestRejected,
    parse_multipart,
)
from mqtt_bridge.model.values import JsonDict, JsonValue

__all__ = ["ALL_SCOPES", "DEFAULT_API_KEY", "Emulator", "Faults", "RequestRecord", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "demo-key"
DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  # the only Roboflow number, the bundle limit (spec §5 G7)
_FORBIDDEN = "Insufficient permissions for this resource."
_REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the emulator saw it. `at_s` is `time.monotonic()` at arrival; status 0 = reset."""

    method: str
    path: str
    status: int
    at_s: float

    def to_json(self) -> JsonDict:
        """Render for `GET /_emulator/requests`."""
        return {"method": self.method, "path": self.path, "status": self.status, "at_s": self.at_s}


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # how the client reached us, for image URLs


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    is_reset: bool = False


_Handler = Callable[[_Request, tuple[str, ...]], _Response]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: _Handler
    scopes: frozenset[str] | None = None  # None: open (page, images, control API)
    is_write: bool = False
    is_event_write: bool = False


def _json(status: int, body: JsonValue, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, orjson.dumps(body), headers=headers)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _json(status, {"error": message}, headers)


def _load_json(body: bytes) -> JsonValue:
    try:
        value: JsonValue = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RequestRejected(400, "body must be valid JSON") from None
    return value


class Emulator:
    """The emulated Vision Events API on a local port. Start it, point a client at `url`, inspect, stop it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 api_keys: dict[str, frozenset[str]] | None = None, strict: bool = False,
                 use_cases: list[dict[str, str]] | None = None, *, auto_create_use_cases: bool = False,
                 reject_archived: bool = False, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 lookback_days: int = 14) -> None:
        """Prepare an emulator; nothing listens until `start()`.

        Args:
            host: address to bind.
            port: port to bind; 0 picks a free one (read it from `port` after `start()`).
            api_keys: key -> scopes; default `{"demo-key": ALL_SCOPES}`.
            strict: stricter validation (see `EventStore`).
            use_cases: use cases to create, each `{"name": ...}` plus optional `"id"` and `"status"`.
            auto_create_use_cases: accept events for an unknown `useCaseId` by creating the use case.
            reject_archived: refuse events for an archived use case.
            max_body_bytes: larger request bodies get 413.
            lookback_days: query window (`lookbackDays`).
        """
        self._host = host
        self._requested_port = port
        self._api_keys = dict(api_keys) if api_keys is not None else {DEFAULT_API_KEY: ALL_SCOPES}
        self.max_body_bytes = max_body_bytes
        self._store = EventStore(strict=strict, auto_create_use_cases=auto_create_use_cases,
                                 reject_archived=reject_archived, lookback_days=lookback_days)
        for spec in use_cases or []:
            try:
                self._store.add_use_case(spec["name"], spec.get("id"), status=spec.get("status", "active"))
            except RequestRejected as exc:
                raise ValueError(f"use case {spec!r}: {exc.message}") from None
        self._lock = threading.Lock()  # guards faults, request log and stats
        self._faults = Faults()
        self._log: deque[RequestRecord] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._stats: Counter[tuple[str, int]] = Counter()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in a background thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        server = _Server((self._host, self._requested_port), self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"emulator-{self.port}", daemon=True)
        self._thread.start()
        logger.info("emulator started url=%s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the server thread. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # cuts injected delays short
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None
        logger.info("emulator stopped")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port. Raises RuntimeError before `start()`."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. `http://127.0.0.1:8123` (a wildcard bind address becomes 127.0.0.1)."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host  # noqa: S104 - compared, not bound
        return f"http://{host}:{self.port}"

    # ---- faults --------------------------------------------------------------------------------------------

    def set_faults(self, *, statuses: Iterable[int] = (), status_always: int | None = None,
                   retry_after_s: float | None = None, delay_s: float = 0.0, reset_after_commit: int = 0,
                   fail_event_ids: Iterable[str] = ()) -> Faults:
        """Replace the fault script (see `Faults` for each field). Raises ValueError for a bad value."""
        faults = Faults(tuple(statuses), status_always, retry_after_s, delay_s, reset_after_commit,
                        frozenset(fail_event_ids))
        self.apply_faults(faults)
        return faults

    def apply_faults(self, faults: Faults) -> None:
        """Replace the fault script with a ready `Faults` value."""
        with self._lock:
            self._faults = faults
        logger.info("emulator faults set faults=%s", faults)

    def clear_faults(self) -> None:
        """Remove every scripted fault."""
        self.apply_faults(Faults())

    @property
    def faults(self) -> Faults:
        """The faults still scripted (consumed statuses and resets are gone)."""
        with self._lock:
            return self._faults

    # ---- inspection and setup ------------------------------------------------------------------------------

    def add_use_case(self, name: str, id: str | None = None) -> str:
        """Create an active use case and return its id (a random 8-hex id unless given)."""
        try:
            return self._store.add_use_case(name, id).id
        except RequestRejected as exc:
            raise ValueError(exc.message) from None

    def use_cases(self) -> list[JsonDict]:
        """Every use case, active and archived, as E5 lists them."""
        return [uc.to_json() for uc in self._store.list_use_cases()]

    def events(self) -> list[JsonDict]:
        """Every stored event as query returns it (with `warnings` and image `url`s), oldest write first."""
        return self._store.all_events(self._base_url())

    def event(self, event_id: str) -> JsonDict | None:
        """One stored event, or None."""
        return self._store.view(event_id, self._base_url())

    def write_counts(self) -> dict[str, int]:
        """How many times each eventId was written; 2 means it was stored, then replaced by a retry."""
        return self._store.write_counts()

    def uploads(self) -> dict[str, bytes]:
        """Uploaded image bytes by sourceId."""
        return self._store.uploads()

    def requests_log(self) -> list[RequestRecord]:
        """Every request except the control API's, oldest first (the last 10 000)."""
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, dict[str, int]]:
        """Request counts as `{"METHOD /path": {"status": count}}`."""
        with self._lock:
            result: dict[str, dict[str, int]] = {}
            for (key, status), count in sorted(self._stats.items()):
                result.setdefault(key, {})[str(status)] = count
            return result

    def reset(self) -> None:
        """Forget events, uploads, faults, the request log and stats; keep use cases."""
        self._store.clear_data()
        with self._lock:
            self._faults = Faults()
            self._log.clear()
            self._stats.clear()

    def _base_url(self) -> str:
        return self.url if self._server is not None else "http://emulator"

    # ---- dispatch ------------------------------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        api = "/vision-events"
        uc = rf"{api}/use-cases/([^/]+)"
        table: list[tuple[str, str, _Handler, frozenset[str] | None, bool]] = [
            ("POST", api, self._create_event, WRITE_SCOPES, True),
            ("POST", f"{api}/batch", self._create_batch, WRITE_SCOPES, True),
            ("POST", f"{api}/upload", self._upload, WRITE_SCOPES, True),
            ("POST", f"{api}/query", self._query, READ_SCOPES, False),
            ("GET", f"{api}/use-cases", self._list_use_cases, READ_SCOPES, False),
            ("POST", f"{api}/use-cases", self._create_use_case, MANAGE_SCOPES, False),
            ("PUT", uc, self._rename_use_case, MANAGE_SCOPES, False),
            ("POST", f"{uc}/(archive|unarchive)", self._archive, MANAGE_SCOPES, False),
            ("GET", rf"{api}/custom-metadata-schema/([^/]+)", self._schema, READ_SCOPES, False),
            ("GET", "/", self._page, None, False),
            ("GET", r"/images/([^/]+)\.(\w+)", self._image, None, False),
            ("GET", "/_emulator/faults", lambda _, __: _json(200, self.faults.to_json()), None, False),
            ("POST", "/_emulator/faults", self._post_faults, None, False),
            ("DELETE", "/_emulator/faults", self._delete_faults, None, False),
            ("GET", "/_emulator/events", self._get_events, None, False),
            ("GET", "/_emulator/requests", lambda _, __: _json(200, {"requests": [
                record.to_json() for record in self.requests_log()]}), None, False),
            ("GET", "/_emulator/stats", self._get_stats, None, False),
            ("POST", "/_emulator/use-cases", self._post_use_case, None, False),
            ("POST", "/_emulator/reset", self._post_reset, None, False),
        ]
        return [_Route(method, re.compile(path), handler, scopes, is_write,
                       is_event_write=path in (api, f"{api}/batch"))
                for method, path, handler, scopes, is_write in table]

    def _dispatch(self, request: _Request) -> _Response:
        matched = [(route, m) for route in self._routes if (m := route.pattern.fullmatch(request.path))]
        if not matched:
            return _error(404, "not found")
        found = next(((route, m) for route, m in matched if route.method == request.method), None)
        if found is None:
            return _error(405, "method not allowed")
        route, match = found
        try:
            if route.scopes is None:
                return route.handler(request, match.groups())
            self._authorize(request, route.scopes)
            return self._serve_api(route, request, match.groups())
        except RequestRejected as exc:
            return _error(exc.status, exc.message)

    def _authorize(self, request: _Request, needed: frozenset[str]) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else request.query.get("api_key", "")
        if not key:
            raise RequestRejected(401, "Missing API key: send Authorization: Bearer <key> or ?api_key=")
        scopes = self._api_keys.get(key)
        if scopes is None:
            raise RequestRejected(401, "Invalid API key")
        if not scopes & needed:
            raise RequestRejected(403, _FORBIDDEN)

    def _serve_api(self, route: _Route, request: _Request, args: tuple[str, ...]) -> _Response:
        with self._lock:  # take this request's faults atomically, so concurrent writes consume them in order
            faults = self._faults
            status = faults.status_always
            if status is None and route.is_write and faults.statuses:
                status = faults.statuses[0]
                self._faults = replace(faults, statuses=faults.statuses[1:])
        if faults.delay_s > 0:
            self._stopping.wait(faults.delay_s)  # an Event, not sleep: stop() must not wait for a slow reply
        if status is not None:
            logger.info("emulator injected status=%d path=%s", status, request.path)
            headers: tuple[tuple[str, str], ...] = ()
            if faults.retry_after_s is not None:
                seconds = faults.retry_after_s
                headers = (("Retry-After", str(int(seconds)) if seconds == int(seconds) else str(seconds)),)
            return _error(status, HTTPStatus(status).phrase, headers)
        response = route.handler(request, args)
        if route.is_event_write and response.status < 300:
            with self._lock:
                is_reset = self._faults.reset_after_commit > 0
                if is_reset:
                    left = self._faults.reset_after_commit - 1
                    self._faults = replace(self._faults, reset_after_commit=left)
            if is_reset:
                logger.info("emulator reset connection after commit path=%s", request.path)
                return replace(response, is_reset=True)
        return response

    def _record(self, request: _Request, status: int, at_s: float) -> None:
        if request.path.startswith("/_emulator/"):
            return
        with self._lock:
            self._log.append(RequestRecord(request.method, request.path, status, at_s))
            path = "/images/*" if request.path.startswith("/images/") else request.path
            self._stats[(f"{request.method} {path}", status)] += 1

    # ---- API routes ----------------------------------------------------------------------------------------

    def _create_event(self, request: _Request, _: tuple[str, ...]) -> _Response:
        ids = self._store.write_events([_load_json(request.body)], is_batch=False,
                                       reject_ids=self.faults.fail_event_ids)
        return _json(201, {"eventId": ids[0], "created": True})

    def _create_batch(self, request: _Request, _: tuple[str, ...]) -> _Response:
        body = _load_json(request.body)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise RequestRejected(400, "events is required and must be a list")
        ids = self._store.write_events(events, is_batch=True, reject_ids=self.faults.fail_event_ids)
        return _json(201, {"created": len(ids), "eventIds": list[JsonValue](ids)})

    def _upload(self, request: _Request, _: tuple[str, ...]) -> _Response:
        fields = parse_multipart(request.headers.get("content-type", ""), request.body)
        upload = self._store.add_upload(fields)
        url = f"{request.base_url}/images/{upload.source_id}.{upload.ext}"
        return _json(201, {"success": True, "sourceId": upload.source_id, "url": url})

    def _query(self, request: _Request, _: tuple[str, ...]) -> _Response:
        return _json(200, self._store.query(_load_json(request.body), request.base_url))

    def _list_use_cases(self, request: _Request, _: tuple[str, ...]) -> _Response:
        status = request.query.get("status", "active")
        if status not in ("active", "inactive"):
            raise RequestRejected(400, "status must be active or inactive")
        listed: list[JsonValue] = [uc.to_json() for uc in self._store.list_use_cases(status)]
        return _json(200, {"useCases": listed, "lookbackDays": self._store.lookback_days})

    def _create_use_case(self, request: _Request, _: tuple[str, ...]) -> _Response:
        body = _load_json(request.body)
        name = body.get("name") if isinstance(body, dict) else None
        use_case = self._store.add_use_case(name if isinstance(name, str) else "")
        return _json(201, {"id": use_case.id, "name": use_case.name})

    def _rename_use_case(self, request: _Request, args: tuple[str, ...]) -> _Response:
        body = _load_json(request.body)
        name = body.get("name") if isinstance(body, dict) else None
        use_case = self._store.rename_use_case(args[0], name if isinstance(name, str) else "")
        return _json(200, {"id": use_case.id, "name": use_case.name})

    def _archive(self, _: _Request, args: tuple[str, ...]) -> _Response:
        self._store.set_use_case_status(args[0], "inactive" if args[1] == "archive" else "active")
        return _json(200, {"success": True})

    def _schema(self, _: _Request, args: tuple[str, ...]) -> _Response:
        return _json(200, self._store.metadata_schema(args[0]))

    # ---- open routes: page, images, control API ------------------------------------------------------------

    def _page(self, _: _Request, __: tuple[str, ...]) -> _Response:
        return _Response(200, PAGE_HTML.encode(), "text/html; charset=utf-8")

    def _image(self, _: _Request, args: tuple[str, ...]) -> _Response:
        upload = self._store.upload(args[0])
        if upload is None or upload.ext != args[1]:
            return _error(404, "not found")
        return _Response(200, upload.data, IMAGE_CONTENT_TYPES[upload.ext])

    def _post_faults(self, request: _Request, _: tuple[str, ...]) -> _Response:
        try:
            faults = Faults.from_json(_load_json(request.body))
        except ValueError as exc:
            raise RequestRejected(400, str(exc)) from None
        self.apply_faults(faults)
        return _json(200, faults.to_json())

    def _delete_faults(self, _: _Request, __: tuple[str, ...]) -> _Response:
        self.clear_faults()
        return _json(200, Faults().to_json())

    def _get_events(self, request: _Request, _: tuple[str, ...]) -> _Response:
        events: list[JsonValue] = list(self._store.all_events(request.base_url))
        writes: JsonDict = dict(self._store.write_counts())
        return _json(200, {"events": events, "writes": writes})

    def _get_stats(self, _: _Request, __: tuple[str, ...]) -> _Response:
        counts = self.stats()
        stats: JsonDict = {key: dict(by_status) for key, by_status in counts.items()}
        total = sum(n for by_status in counts.values() for n in by_status.values())
        return _json(200, {"requests": stats, "total": total})

    def _post_use_case(self, request: _Request, _: tuple[str, ...]) -> _Response:
        body = _load_json(request.body)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise RequestRejected(400, 'body must be {"name": ..., "id": ... (optional)}')
        wanted = body.get("id")
        use_case = self._store.add_use_case(str(body["name"]), wanted if isinstance(wanted, str) else None)
        return _json(201, {"id": use_case.id, "name": use_case.name})

    def _post_reset(self, _: _Request, __: tuple[str, ...]) -> _Response:
        self.reset()
        return _json(200, {"success": True})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections must not keep the process alive after stop()

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session expects
    server_version = "VisionEventsEmulator/1"
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True  # headers and body go in two writes; Nagle would add ~40 ms per reply

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self._serve(self.command)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("emulator access client=%s line=%s", self.address_string(), format % args)

    def _serve(self, method: str) -> None:
        server = self.server
        assert isinstance(server, _Server)
        emulator = server.emulator
        if emulator._server is not server:
            # stopped (or restarted): a kept-alive connection must not outlive its server, or "API down" is a lie
            self._reset()
            return
        at_s = time.monotonic()
        split = urlsplit(self.path)
        length_text = self.headers.get("Content-Length", "0")
        request = _Request(method, split.path, dict(parse_qsl(split.query)),
                           {k.lower(): v for k, v in self.headers.items()}, b"",
                           f"http://{self.headers.get('Host') or emulator.url.removeprefix('http://')}")
        if self.headers.get("Transfer-Encoding") or not length_text.isdigit():
            response = _error(411, "send a Content-Length (chunked bodies are not supported)")
        elif int(length_text) > emulator.max_body_bytes:
            self._discard(int(length_text))  # drained, so the client reads the 413 instead of a reset
            response = _error(413, f"body is larger than {emulator.max_body_bytes} bytes")
        else:
            request = replace(request, body=self.rfile.read(int(length_text)))
            try:
                response = emulator._dispatch(request)
            except Exception:  # a handler edge: answer 500 rather than drop the connection silently
                logger.exception("emulator handler failed path=%s", request.path)
                response = _error(500, "emulator internal error")
        # record before answering: a client that has its answer must find its request in the log
        emulator._record(request, 0 if response.is_reset else response.status, at_s)
        if response.is_reset:
            self._reset()
        else:
            self._send(response, is_closing=response.status == 411)

    def _send(self, response: _Response, *, is_closing: bool) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if is_closing:  # the unread body would corrupt the next request on this connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except OSError as exc:
            logger.debug("emulator client went away error=%s", exc)
            self.close_connection = True

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: the client sees a reset, never a response
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()


def serve(host: str, port: int, api_key: str, use_cases: list[str], *,
          stop: threading.Event | None = None) -> None:
    """Run an emulator until Ctrl-C, SIGTERM or `stop` is set.

    Args:
        host: address to bind.
        port: port to bind.
        api_key: the one accepted key (all scopes).
        use_cases: use cases to create, each `ID` (id and name) or `ID=NAME`.
        stop: set it to end the call (for tests); signals are only installed on the main thread.
    """
    stop = stop or threading.Event()
    specs = [{"id": item.partition("=")[0], "name": item.partition("=")[2] or item} for item in use_cases]
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Emulator(host, port, {api_key: ALL_SCOPES}, use_cases=specs) as emulator:
            ids = ",".join(s["id"] for s in specs)
            logger.info("emulator serving url=%s use_cases=%s", emulator.url, ids)
            while not stop.is_set():
                stop.wait(0.5)
    except KeyboardInterrupt:
        logger.info("emulator interrupted")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

