"""Request dispatch: match a route, check the key and scope, play the scripted faults, call the handler.

Owns: `Route` and `Router`: 404 for an unknown path and 405 for a known path with another method, the auth check
of API routes (`auth.authorize`), injected statuses and delays (which apply to API routes only, never to the page,
the images or the control API), and the connection reset after a committed event write. A refusal anywhere
becomes the documented `{"error": ...}` body. Must not open sockets.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus

from .auth import authorize
from .faults import FaultScript
from .messages import Request, RequestRejected, Response, error_response

__all__ = ["Handler", "Route", "Router"]

logger = logging.getLogger(__name__)

Handler = Callable[[Request, tuple[str, ...]], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """One route. `scopes` None: open (page, images, control API); otherwise an API route needing one of them."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    scopes: frozenset[str] | None = None
    is_write: bool = False  # consumes a scripted status (E1, E2, E3)
    is_event_write: bool = False  # may be answered with a reset after commit (E1, E2)


class Router:
    """Dispatches requests over a route table, with auth and faults for the API routes."""

    def __init__(self, routes: list[Route], api_keys: Mapping[str, frozenset[str]], faults: FaultScript,
                 stopping: threading.Event) -> None:
        """Serve `routes`; `stopping` cuts injected delays short when the emulator stops."""
        self._routes = routes
        self._api_keys = api_keys
        self._faults = faults
        self._stopping = stopping

    def dispatch(self, request: Request) -> Response:
        """Answer one request; never raises RequestRejected (it becomes the error body)."""
        matched = [(route, m) for route in self._routes if (m := route.pattern.fullmatch(request.path))]
        if not matched:
            return error_response(404, "not found")
        found = next(((route, m) for route, m in matched if route.method == request.method), None)
        if found is None:
            return error_response(405, "method not allowed")
        route, match = found
        try:
            if route.scopes is None:
                return route.handler(request, match.groups())
            authorize(request, self._api_keys, route.scopes)
            return self._serve_api(route, request, match.groups())
        except RequestRejected as exc:
            return error_response(exc.status, exc.message)

    def _serve_api(self, route: Route, request: Request, args: tuple[str, ...]) -> Response:
        faults, status = self._faults.take(is_write=route.is_write)
        if faults.delay_s > 0:
            self._stopping.wait(faults.delay_s)  # an Event, not sleep: stop() must not wait for a slow reply
        if status is not None:
            logger.info("emulator injected status=%d path=%s", status, request.path)
            return error_response(status, faults.status_message or HTTPStatus(status).phrase,
                                  faults.retry_after_headers())
        response = route.handler(request, args)
        if route.is_event_write and response.status < 300 and self._faults.take_reset():
            logger.info("emulator reset connection after commit path=%s", request.path)
            return replace(response, is_reset=True)
        return response
