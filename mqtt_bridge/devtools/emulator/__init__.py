"""A local Vision Events API for the demo and the tests. It stands in for a server someone else wrote, so it
imports nothing of the product: its rules are its own, written from the API documentation
(`spec/vision-events-api.md`), so that a misreading of the API on the bridge's side is refused here.

Modules: `server` (the `Emulator` and `serve()`, the open routes), `api` (routes E1-E10), `router` (dispatch,
auth check, faults), `handler` (sockets and HTTP), `auth` (keys and scopes), `rules` (what an event, its
metadata and a batch must be), `ingestion` (accepted with a warning, images dropped), `query` (E4 filters and
cursors), `multipart` (upload parsing and image formats), `store` (use cases, events, uploads), `faults` (scripted
faults), `traffic` (request log and stats), `messages` (request, response, the error body), `values` (JSON types
and ISO 8601 times), `page` (the web page).
"""
