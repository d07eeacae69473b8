"""A local Vision Events API: a real HTTP server that stores what it receives and plays scripted faults.

Owns: `Emulator`, the one object tests, the demo and `mqtt-bridge emulator` use (start and stop it, point a client
at `url`, script faults, inspect what arrived), the open routes beside the API (a web page at `/`, uploaded images
at `/images/<sourceId>.<ext>`, the `/_emulator/...` control API) and `serve()`, the blocking command-line entry.
It wires the parts together: `api` (E1-E10), `router` (auth and faults), `handler` (sockets), `store` (state),
`rules` (what the API accepts), `traffic` (the request log). It imports nothing of the bridge.

Control API (no auth): `GET|POST|DELETE /_emulator/faults`, `GET /_emulator/events`, `GET /_emulator/uploads`,
`GET /_emulator/stats`, `GET /_emulator/requests`, `POST /_emulator/use-cases`, `POST /_emulator/reset`. A POST or
PUT must say `Content-Type: application/json` (else 415), and a request whose `Origin` is not the emulator's own is
refused with 403, so that a web page open in the same browser cannot script faults or wipe the store (issue 16
item 7).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import signal
import threading
from collections.abc import Iterable
from types import FrameType, TracebackType
from urllib.parse import urlsplit

from .api import ApiRoutes
from .auth import ALL_SCOPES
from .faults import Faults, FaultScript
from .handler import HttpServer, Serving
from .messages import (
    Request,
    RequestRejected,
    Response,
    error_response,
    json_response,
    load_json,
)
from .multipart import IMAGE_CONTENT_TYPES
from .page import PAGE_HTML
from .router import Handler, Route, Router
from .store import EventStore
from .traffic import RequestLog, RequestRecord
from .values import JsonDict, JsonValue

__all__ = ["ALL_SCOPES", "DEFAULT_API_KEY", "Emulator", "Faults", "RequestRecord", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "demo-key"
DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  # the only Roboflow number, the bundle limit (spec §5 G7)


class Emulator:
    """The emulated Vision Events API on a local port. Start it, point a client at `url`, inspect, stop it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 api_keys: dict[str, frozenset[str]] | None = None, strict: bool = False,
                 use_cases: list[dict[str, str]] | None = None, *, auto_create_use_cases: bool = False,
                 reject_archived: bool = False, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 lookback_days: int = 14, list_unused_use_cases: bool = False) -> None:
        """Prepare an emulator; nothing listens until `start()`.

        Args:
            host: address to bind.
            port: port to bind; 0 picks a free one (read it from `port` after `start()`).
            api_keys: key -> scopes; default `{"demo-key": ALL_SCOPES}`.
            strict: also apply the strict-only rules (see `EventStore`).
            use_cases: use cases to create, each `{"name": ...}` plus optional `"id"` and `"status"`.
            auto_create_use_cases: accept events for an unknown `useCaseId` by creating the use case.
            reject_archived: refuse events for an archived use case.
            max_body_bytes: larger request bodies get 413.
            lookback_days: query window (`lookbackDays`).
            list_unused_use_cases: E5 lists every use case; by default only those that have recorded events, as
                documented (switch it at run time with `lists_unused_use_cases`).
        """
        self._host = host
        self._requested_port = port
        api_keys = dict(api_keys) if api_keys is not None else {DEFAULT_API_KEY: ALL_SCOPES}
        self.max_body_bytes = max_body_bytes
        self._store = EventStore(strict=strict, auto_create_use_cases=auto_create_use_cases,
                                 reject_archived=reject_archived, lookback_days=lookback_days,
                                 list_unused_use_cases=list_unused_use_cases)
        for spec in use_cases or []:
            try:
                self._store.add_use_case(spec["name"], spec.get("id"), status=spec.get("status", "active"))
            except RequestRejected as exc:
                raise ValueError(f"use case {spec!r}: {exc.message}") from None
        self._faults = FaultScript()
        self._log = RequestLog()
        self._stopping = threading.Event()
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        routes = [*ApiRoutes(self._store, self._faults).routes(), *self._open_routes()]
        self._router = Router(routes, api_keys, self._faults, self._stopping)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in a background thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        serving = Serving(dispatch=self._router.dispatch, record=self._record,
                          max_body_bytes=lambda: self.max_body_bytes,
                          is_current=lambda server: server is self._server,
                          fallback_host=lambda: self.url.removeprefix("http://"))
        server = HttpServer((self._host, self._requested_port), serving)
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
                   fail_event_ids: Iterable[str] = (), status_message: str | None = None,
                   drop_event_ids: Iterable[str] = (), partial: int | None = None,
                   partial_once: bool = False, forget_event_ids: Iterable[str] = (),
                   forget_events: int = 0) -> Faults:
        """Replace the fault script (see `Faults` for each field). Raises ValueError for a bad value."""
        faults = Faults(tuple(statuses), status_always, retry_after_s, delay_s, reset_after_commit,
                        frozenset(fail_event_ids), status_message, frozenset(drop_event_ids), partial, partial_once,
                        frozenset(forget_event_ids), forget_events)
        self.apply_faults(faults)
        return faults

    def apply_faults(self, faults: Faults) -> None:
        """Replace the fault script with a ready `Faults` value."""
        self._faults.apply(faults)

    def clear_faults(self) -> None:
        """Remove every scripted fault."""
        self.apply_faults(Faults())

    @property
    def faults(self) -> Faults:
        """The faults still scripted (consumed statuses and resets are gone)."""
        return self._faults.current

    # ---- inspection and setup ------------------------------------------------------------------------------

    def add_use_case(self, name: str, id: str | None = None) -> str:
        """Create an active use case and return its id (a random 8-hex id unless given)."""
        try:
            return self._store.add_use_case(name, id).id
        except RequestRejected as exc:
            raise ValueError(exc.message) from None

    @property
    def lists_unused_use_cases(self) -> bool:
        """Whether E5 lists use cases that have no recorded event yet (the documented list does not)."""
        return self._store.lists_unused_use_cases

    @lists_unused_use_cases.setter
    def lists_unused_use_cases(self, value: bool) -> None:
        self._store.lists_unused_use_cases = value

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

    def upload_details(self) -> list[JsonDict]:
        """Every upload's `sourceId`, `name`, `metadata`, `ext` and size (`bytes`), oldest first."""
        return self._store.upload_details()

    def requests_log(self) -> list[RequestRecord]:
        """Every request except the control API's, oldest first (the last 10 000)."""
        return self._log.records()

    def stats(self) -> dict[str, dict[str, int]]:
        """Request counts as `{"METHOD /path": {"status": count}}`."""
        return self._log.stats()

    def reset(self) -> None:
        """Forget events, uploads, faults, the request log and stats; keep use cases."""
        self._store.clear_data()
        self._faults.apply(Faults())
        self._log.clear()

    def _base_url(self) -> str:
        return self.url if self._server is not None else "http://emulator"

    def _record(self, request: Request, status: int, at_s: float) -> None:
        self._log.record(request.method, request.path, status, at_s)

    # ---- open routes: page, images, control API ------------------------------------------------------------

    def _open_routes(self) -> list[Route]:
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/", lambda _, __: Response(200, PAGE_HTML.encode(), "text/html; charset=utf-8")),
            ("GET", r"/images/([^/]+)\.(\w+)", self._image),
        ]
        control: list[tuple[str, str, Handler]] = [
            ("GET", "/_emulator/faults", lambda _, __: json_response(200, self.faults.to_json())),
            ("POST", "/_emulator/faults", self._post_faults),
            ("DELETE", "/_emulator/faults", self._delete_faults),
            ("GET", "/_emulator/events", self._get_events),
            ("GET", "/_emulator/uploads", lambda _, __: json_response(200, {"uploads": list[JsonValue](
                self.upload_details())})),
            ("GET", "/_emulator/requests", lambda _, __: json_response(200, {"requests": [
                record.to_json() for record in self.requests_log()]})),
            ("GET", "/_emulator/stats", self._get_stats),
            ("POST", "/_emulator/use-cases", self._post_use_case),
            ("POST", "/_emulator/reset", self._post_reset),
        ]
        table.extend((method, path, self._guarded(handler)) for method, path, handler in control)
        return [Route(method, re.compile(path), handler) for method, path, handler in table]

    def _guarded(self, handler: Handler) -> Handler:
        """`handler` behind the control API's checks: a page on another origin must not script the emulator."""

        def guarded(request: Request, args: tuple[str, ...]) -> Response:
            origin = request.headers.get("origin")
            if origin is not None and not self._is_own_origin(origin, request.base_url):
                raise RequestRejected(403, "the control API refuses cross-origin requests")
            if request.method in ("POST", "PUT"):
                content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
                if content_type != "application/json":  # a cross-site form cannot send it without a preflight
                    raise RequestRejected(415, "the control API takes Content-Type: application/json")
            return handler(request, args)

        return guarded

    def _is_own_origin(self, origin: str, base_url: str) -> bool:
        """Whether a browser's `Origin` is the emulator's own: the origin the request came to (its Host), under a
        loopback name, an IP address or the bound host. A rebound DNS name (Host and Origin both `evil.example`)
        is not (issue 16 item 7)."""
        if origin.rstrip("/").lower() != base_url.lower():
            return False
        name = (urlsplit(base_url).hostname or "").lower()
        if name in ("localhost", self._host.lower()) or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _image(self, _: Request, args: tuple[str, ...]) -> Response:
        upload = self._store.upload(args[0])
        if upload is None or upload.ext != args[1]:
            return error_response(404, "not found")
        return Response(200, upload.data, IMAGE_CONTENT_TYPES[upload.ext])

    def _post_faults(self, request: Request, _: tuple[str, ...]) -> Response:
        try:
            faults = Faults.from_json(load_json(request.body))
        except ValueError as exc:
            raise RequestRejected(400, str(exc)) from None
        self.apply_faults(faults)
        return json_response(200, faults.to_json())

    def _delete_faults(self, _: Request, __: tuple[str, ...]) -> Response:
        self.clear_faults()
        return json_response(200, Faults().to_json())

    def _get_events(self, request: Request, _: tuple[str, ...]) -> Response:
        events: list[JsonValue] = list(self._store.all_events(request.base_url))
        writes: JsonDict = dict(self._store.write_counts())
        return json_response(200, {"events": events, "writes": writes})

    def _get_stats(self, _: Request, __: tuple[str, ...]) -> Response:
        counts = self.stats()
        stats: JsonDict = {key: dict(by_status) for key, by_status in counts.items()}
        total = sum(n for by_status in counts.values() for n in by_status.values())
        return json_response(200, {"requests": stats, "total": total})

    def _post_use_case(self, request: Request, _: tuple[str, ...]) -> Response:
        body = load_json(request.body)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise RequestRejected(400, 'body must be {"name": ..., "id": ... (optional)}')
        wanted = body.get("id")
        use_case = self._store.add_use_case(str(body["name"]), wanted if isinstance(wanted, str) else None)
        return json_response(201, {"id": use_case.id, "name": use_case.name})

    def _post_reset(self, _: Request, __: tuple[str, ...]) -> Response:
        self.reset()
        return json_response(200, {"success": True})


def serve(host: str, port: int, api_key: str, use_cases: list[str], *,
          stop: threading.Event | None = None, list_unused_use_cases: bool = False) -> None:
    """Run an emulator until Ctrl-C, SIGTERM or `stop` is set.

    Args:
        host: address to bind.
        port: port to bind.
        api_key: the one accepted key (all scopes).
        use_cases: use cases to create, each `ID` (id and name) or `ID=NAME`.
        stop: set it to end the call (for tests); signals are only installed on the main thread.
        list_unused_use_cases: E5 lists every use case, not only those that have recorded events.
    """
    stop = stop or threading.Event()
    specs = [{"id": item.partition("=")[0], "name": item.partition("=")[2] or item} for item in use_cases]
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Emulator(host, port, {api_key: ALL_SCOPES}, use_cases=specs,
                      list_unused_use_cases=list_unused_use_cases) as emulator:
            ids = ",".join(s["id"] for s in specs)
            logger.info("emulator serving url=%s use_cases=%s", emulator.url, ids)
            while not stop.is_set():
                stop.wait(0.5)
    except KeyboardInterrupt:
        logger.info("emulator interrupted")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
