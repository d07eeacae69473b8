"""The routes of the emulated Vision Events API, E1-E10 of spec §1.3, with their documented success answers.

Owns: one handler per endpoint, turning a request into a store call and the store's result into the documented
body and status (E1 201 `{"eventId", "created"}`, E2 201 `{"created", "eventIds"}` in request order, less what a
partial-success fault drops, E3 201 `{"success", "sourceId", "url"}`, E4 200, E5 200 `{"useCases",
"lookbackDays"}` (only use cases that have recorded events, spec §6), E6 201, E7-E10 200), and the route table with
the scopes each endpoint needs (spec §1.2). Validation lives in `rules`, `query` and `store`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .auth import MANAGE_SCOPES, READ_SCOPES, WRITE_SCOPES
from .faults import FaultScript
from .messages import Request, RequestRejected, Response, json_response, load_json
from .multipart import parse_multipart
from .router import Handler, Route
from .rules import EventContext, batch_problems
from .store import EventStore
from .values import JsonValue

__all__ = ["ApiRoutes"]

_API = "/vision-events"


def _name(body: JsonValue) -> str:
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else ""


class ApiRoutes:
    """The E1-E10 handlers over one store."""

    def __init__(self, store: EventStore, faults: FaultScript) -> None:
        """Serve `store`; `faults` supplies the poisoned event ids of a scripted fault."""
        self._store = store
        self._faults = faults

    def routes(self) -> list[Route]:
        """The route table of E1-E10 with the scopes of spec §1.2."""
        use_case = rf"{_API}/use-cases/([^/]+)"
        table: list[tuple[str, str, Handler, frozenset[str], bool]] = [
            ("POST", _API, self._create_event, WRITE_SCOPES, True),
            ("POST", f"{_API}/batch", self._create_batch, WRITE_SCOPES, True),
            ("POST", f"{_API}/upload", self._upload, WRITE_SCOPES, True),
            ("POST", f"{_API}/query", self._query, READ_SCOPES, False),
            ("GET", f"{_API}/use-cases", self._list_use_cases, READ_SCOPES, False),
            ("POST", f"{_API}/use-cases", self._create_use_case, MANAGE_SCOPES, False),
            ("PUT", use_case, self._rename_use_case, MANAGE_SCOPES, False),
            ("POST", f"{use_case}/(archive|unarchive)", self._archive, MANAGE_SCOPES, False),
            ("GET", rf"{_API}/custom-metadata-schema/([^/]+)", self._schema, READ_SCOPES, False),
        ]
        return [Route(method, re.compile(path), handler, scopes, is_write,
                      is_event_write=path in (_API, f"{_API}/batch"))
                for method, path, handler, scopes, is_write in table]

    def _create_event(self, request: Request, _: tuple[str, ...]) -> Response:
        ids = self._store.write_events([load_json(request.body)], is_batch=False,
                                       reject_ids=self._faults.current.fail_event_ids,
                                       is_forgotten=self._faults.take_forget)
        return json_response(201, {"eventId": ids[0], "created": True})

    def _create_batch(self, request: Request, _: tuple[str, ...]) -> Response:
        body = load_json(request.body)
        problems = batch_problems(body, EventContext(now=datetime.now(UTC)))
        if problems:
            raise RequestRejected(400, "; ".join(problems))
        events = body.get("events") if isinstance(body, dict) else None
        assert isinstance(events, list)  # batch_problems checked it; this narrows the type
        # a partial success (spec §6: not documented, so played on request): the dropped events are not stored
        dropped = self._faults.take_drops([str(e.get("eventId")) if isinstance(e, dict) else "" for e in events])
        ids = self._store.write_events(events, is_batch=True, reject_ids=self._faults.current.fail_event_ids,
                                       skip=frozenset(dropped), is_forgotten=self._faults.take_forget)
        return json_response(201, {"created": len(ids), "eventIds": list[JsonValue](ids)})

    def _upload(self, request: Request, _: tuple[str, ...]) -> Response:
        fields = parse_multipart(request.headers.get("content-type", ""), request.body)
        upload = self._store.add_upload(fields)
        url = f"{request.base_url}/images/{upload.source_id}.{upload.ext}"
        return json_response(201, {"success": True, "sourceId": upload.source_id, "url": url})

    def _query(self, request: Request, _: tuple[str, ...]) -> Response:
        return json_response(200, self._store.query(load_json(request.body), request.base_url))

    def _list_use_cases(self, request: Request, _: tuple[str, ...]) -> Response:
        status = request.query.get("status", "active")  # §2.5: active (the default) or inactive
        if status not in ("active", "inactive"):
            raise RequestRejected(400, "status must be active or inactive")
        listed: list[JsonValue] = [uc.to_json() for uc in self._store.listed_use_cases(status)]
        return json_response(200, {"useCases": listed, "lookbackDays": self._store.lookback_days})

    def _create_use_case(self, request: Request, _: tuple[str, ...]) -> Response:
        use_case = self._store.add_use_case(_name(load_json(request.body)))
        return json_response(201, {"id": use_case.id, "name": use_case.name})

    def _rename_use_case(self, request: Request, args: tuple[str, ...]) -> Response:
        use_case = self._store.rename_use_case(args[0], _name(load_json(request.body)))
        return json_response(200, {"id": use_case.id, "name": use_case.name})

    def _archive(self, _: Request, args: tuple[str, ...]) -> Response:
        self._store.set_use_case_status(args[0], "inactive" if args[1] == "archive" else "active")
        return json_response(200, {"success": True})

    def _schema(self, _: Request, args: tuple[str, ...]) -> Response:
        return json_response(200, self._store.metadata_schema(args[0]))
