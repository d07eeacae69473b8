"""Who may call what: API keys, the scopes each route needs, and the 401/403 answers.

Owns: the scope sets of spec §1.2 (reads `vision-events:read` or `device:read`; writes `vision-events:write` or
`device:update`, also in the `visionEvents.write` / `device.update` spelling of the send-events page, which §6
says the emulator accepts; use-case management `vision-events:manage`, assumed for rename and archive by §5 G14),
and `authorize`: the key from `Authorization: Bearer <key>` or `?api_key=` (both accepted, spec §1.2), 401 for a
missing or unknown key and 403 `{"error": "Insufficient permissions for this resource."}` for a missing scope
(spec §4.1, §4.5). Must not keep state.
"""

from __future__ import annotations

from collections.abc import Mapping

from .messages import Request, RequestRejected

__all__ = ["ALL_SCOPES", "FORBIDDEN", "MANAGE_SCOPES", "READ_SCOPES", "WRITE_SCOPES", "authorize"]

ALL_SCOPES = frozenset({"vision-events:read", "vision-events:write", "vision-events:manage"})
READ_SCOPES = frozenset({"vision-events:read", "device:read"})
WRITE_SCOPES = frozenset({"vision-events:write", "device:update", "visionEvents.write", "device.update"})
MANAGE_SCOPES = frozenset({"vision-events:manage"})
FORBIDDEN = "Insufficient permissions for this resource."


def authorize(request: Request, api_keys: Mapping[str, frozenset[str]], needed: frozenset[str]) -> None:
    """Return when the request's key holds one of `needed`; raise RequestRejected(401 or 403) otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else request.query.get("api_key", "")
    if not key:
        raise RequestRejected(401, "Missing API key: send Authorization: Bearer <key> or ?api_key=")
    scopes = api_keys.get(key)
    if scopes is None:
        raise RequestRejected(401, "Invalid API key")
    if not scopes & needed:
        raise RequestRejected(403, FORBIDDEN)
