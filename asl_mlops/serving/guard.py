"""HTTP limits in front of MLflow's scoring app: body size, content type and JSON shape checked before parsing; the web page; access log.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import re
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asl_mlops.config import DEFAULT_MAX_BODY_BYTES
from asl_mlops.serving.metrics import Metrics

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("asl_mlops.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Deepest JSON nesting accepted: requests need 4 (dataframe_split: object, object, data, row).
MAX_JSON_DEPTH = 32
#: Most JSON arrays + objects in one request: a dataframe_split of MAX_ROWS rows has MAX_ROWS + 4, records
#: MAX_ROWS + 2. Bounds the Python objects a small body can make MLflow build ('[[],[],...]').
MAX_JSON_CONTAINERS = 4 * 1024 + 64
#: Content types the guard passes on: the two MLflow parses from text. Parquet is refused: it is compressed,
#: so a body under the limit can expand without bound before the model's row limit applies.
ACCEPTED_CONTENT_TYPES = ("application/json", "text/csv")
#: Paths counted under their own name in the metrics; anything else is counted as "other".
KNOWN_PATHS = ("/", "/invocations", "/ping", "/health", "/version", "/metrics", "/teach")
#: Teach mode's path: GET its settings (and a person's counts), POST one photo (asl_mlops.serving.collect).
TEACH_PATH = "/teach"
#: The response header naming the registered model version that answered (absent for an unregistered model).
VERSION_HEADER = b"x-model-version"
#: Paths that answer the web page.
PAGE_PATHS = ("/", "/index.html")
#: The page's headers besides its length: it is revalidated on every load (a new version shows at once), and
#: the browser refuses anything it would load from another host (the page is self-contained and works offline).
PAGE_HEADERS = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
                                 b"style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
)


# --- the request guard: pure checks ---------------------------------------------------------------

class Refusal(Exception):
    """A request the guard answers itself, with an HTTP status and a message naming the problem."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def check_content_type(value: str | None) -> None:
    """Refuse (415) a missing Content-Type or one MLflow's app would not parse; charset checks stay MLflow's."""
    accepted = " or ".join(ACCEPTED_CONTENT_TYPES)
    if value is None or not value.strip():
        raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"missing Content-Type header: send 'Content-Type: application/json' (accepted: {accepted})")
    mime = value.split(";")[0].strip()
    if mime not in ACCEPTED_CONTENT_TYPES:
        raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"Content-Type '{value[:100]}' is not accepted: send {accepted}")


def check_declared_length(value: str | None, limit: int) -> None:
    """Refuse a Content-Length that is not a number (400) or over the limit (413), before any byte is read."""
    if value is None:
        return
    if not value.strip().isdigit():
        raise Refusal(400, "BAD_REQUEST", f"Content-Length '{value[:40]}' is not a number of bytes")
    if int(value) > limit:
        raise Refusal(413, "REQUEST_TOO_LARGE",
                      f"request body of {int(value)} bytes is larger than the limit of {limit} bytes")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_KEYS = "dataframe_split, dataframe_records, instances or inputs"


def json_shape_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH,
                       max_containers: int = MAX_JSON_CONTAINERS) -> str | None:
    """Why a JSON request body cannot be a request, from its bytes alone; None if it may be one.

    Checks that it is an object (not a list or scalar), that strings end and brackets balance, its
    nesting depth and its number of arrays and objects. Not a parser: MLflow's `json.loads` still decides
    the rest (a body passing this may be refused there with 400). Strings are removed first (a regex, in C),
    so brackets inside them do not count; the depth is a cumulative sum over the remaining brackets (numpy).
    """
    import numpy as np

    text = body.lstrip(b" \t\r\n")
    if not text:
        return f"the body is empty: send a JSON object with one of the keys {_KEYS}"
    if text[:1] == b"[":
        return f"the body is a JSON list: send a JSON object with one of the keys {_KEYS}"
    if text[:1] != b"{":
        return f"the body is not a JSON object: send a JSON object with one of the keys {_KEYS}"
    skeleton = _JSON_STRING.sub(b"", text)
    if b'"' in skeleton:
        return "not valid JSON: a string is not closed"
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    if containers > max_containers:
        return (f"the JSON holds {containers} arrays and objects, more than the limit of {max_containers} "
                "(a request has at most 1024 rows)")
    step = np.zeros(256, dtype=np.int8)  # byte -> +1 for [ {, -1 for ] }
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    steps = step[np.frombuffer(skeleton, dtype=np.uint8)]
    depth = np.cumsum(steps[steps != 0], dtype=np.int32)
    if int(depth.max()) > max_depth:
        return f"the JSON is nested {int(depth.max())} levels deep, more than the limit of {max_depth}"
    if int(depth.min()) < 0 or int(depth[-1]) != 0:
        return "not valid JSON: brackets do not balance"
    return None


def answered_rows(body: bytes) -> list[str]:
    """The letters of a 200 answer of MLflow's app ({"predictions": [{"letter": ...}, ...]})."""
    predictions = json.loads(body)["predictions"]
    return [str(p["letter"]) for p in predictions]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def page_html() -> bytes:
    """The web page served at GET /, read from the installed package."""
    return (importlib.resources.files("asl_mlops.serving") / "page" / "index.html").read_bytes()


class RequestGuard:
    """ASGI middleware around MLflow's scoring app: refuses hostile /invocations requests before they reach
    it, serves the web page and /metrics, and observes every answer (metrics, access log). See the module
    docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 metrics: Metrics | None = None, *, version: str | None = None, store: Any = None) -> None:
        self.max_body_bytes = max_body_bytes
        # The model's app and the registered version it serves, swapped together by `switch` (one assignment,
        # so a request sees one or the other, never a mix); each request keeps the pair it started with.
        self.current: tuple[ASGIApp, str | None] = (app, version)
        self.metrics = metrics or Metrics()
        self.store = store  # teach mode's PhotoStore (asl_mlops.serving.collect), None when it is off
        self.page = page_html()  # once per worker: a missing page fails at start-up, not at the first visit

    @property
    def app(self) -> ASGIApp:
        return self.current[0]

    @property
    def version(self) -> str | None:
        return self.current[1]

    def switch(self, app: ASGIApp, version: str | None) -> None:
        """Serve `app` (the app of registered `version`) from the next request on; requests already running finish
        on the app they started with."""
        self.current = (app, version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app, version = self.current
        if scope["type"] != "http":  # lifespan: MLflow's app has nothing to start, pass it on
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        state: dict[str, Any] = {"status": None, "letters": None, "version": version}
        try:
            if path == "/metrics" and method == "GET":
                body, content_type = self.metrics.exposition()
                state["status"] = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", content_type.encode())]})
                await send({"type": "http.response.body", "body": body})
            elif path in PAGE_PATHS and method == "GET":
                state["status"] = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*PAGE_HEADERS, (b"content-length", str(len(self.page)).encode())]})
                await send({"type": "http.response.body", "body": self.page})
            elif path == "/invocations" and method == "POST":
                await self._invocations(app, scope, receive, send, state)
            elif path == TEACH_PATH and method in ("GET", "POST"):
                await self._teach(scope, receive, send, state)
            else:
                await app(scope, receive, self._observing(send, state, capture=False))
        finally:
            self._record(scope, method, path, state, time.perf_counter() - start)

    async def _teach(self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]) -> None:
        """Teach mode: GET its settings (with ?name=, that person's photo counts), POST ?name=&letter= one photo's
        bytes (image/jpeg or image/png). 404 when the server runs without --collect-dir."""
        from urllib.parse import parse_qs

        try:
            if self.store is None:
                raise Refusal(404, "NOT_FOUND", "teach mode is off: start the server with --collect-dir DIR to keep "
                                                "photos people show it")
            from asl_mlops.serving.collect import MAX_PHOTO_BYTES, CollectError

            query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
            try:
                if scope["method"] == "GET":
                    status, payload = 200, self.store.info(query.get("name"))
                else:
                    check_declared_length(_header(scope, b"content-length"), MAX_PHOTO_BYTES)
                    body = await self._read_body(receive, MAX_PHOTO_BYTES)
                    if body is None:
                        return
                    status, payload = 201, await asyncio.to_thread(
                        self.store.add, query.get("name"), query.get("letter"), body, _header(scope, b"content-type"))
            except CollectError as err:
                raise Refusal(err.status, err.error_code, err.message) from None
        except Refusal as refusal:
            state["status"] = refusal.status
            await _send_json(send, refusal.status, {"error_code": refusal.error_code, "message": refusal.message})
            return
        state["status"] = status
        await _send_json(send, status, payload)

    async def _invocations(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                           state: dict[str, Any]) -> None:
        try:
            check_content_type(_header(scope, b"content-type"))
            check_declared_length(_header(scope, b"content-length"), self.max_body_bytes)
            body = await self._read_body(receive)
            if body is None:  # the client went away
                return
            if _header(scope, b"content-type").split(";")[0].strip() == "application/json":
                problem = json_shape_problem(body)
                if problem:
                    raise Refusal(400, "BAD_REQUEST", problem)
        except Refusal as refusal:
            state["status"] = refusal.status
            self.metrics.refusals.labels(refusal.error_code.lower()).inc()
            await _send_json(send, refusal.status, {"error_code": refusal.error_code, "message": refusal.message})
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await app(scope, replay, self._observing(send, state, capture=True))

    async def _read_body(self, receive: Receive, limit: int | None = None) -> bytes | None:
        """The whole body, refusing (413) as soon as it grows over `limit` (default the server's); None if the
        client disconnected."""
        limit = self.max_body_bytes if limit is None else limit
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refusal(413, "REQUEST_TOO_LARGE",
                              f"request body is larger than the limit of {limit} bytes "
                              f"(more than {size - len(chunk)} bytes read when the next chunk arrived)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _observing(self, send: Send, state: dict[str, Any], capture: bool) -> Send:
        """`send`, noting the status and (with `capture`) the body of a 200 answer to count its letters."""
        parts: list[bytes] = []

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if state["version"] is not None:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      (VERSION_HEADER, state["version"].encode())]}
            elif message["type"] == "http.response.body" and capture and state["status"] == 200:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        state["letters"] = answered_rows(b"".join(parts))
                    except (ValueError, KeyError, TypeError) as err:  # an answer not of the recognizer's shape
                        logger.warning("answer of /invocations has no predictions with letters (%s)", err)
            await send(message)

        return observed

    def _record(self, scope: Scope, method: str, path: str, state: dict[str, Any], seconds: float) -> None:
        status, letters = state["status"], state["letters"]
        client = scope.get("client") or ("-", 0)
        rows = "-" if letters is None else str(len(letters))
        if status is None:  # no answer was sent: client disconnected, or the app raised before answering
            access_logger.info("%s:%s %s %s - rows=- %.1fms (no answer)", client[0], client[1], method, path,
                               1e3 * seconds)
            return
        label = path if path in KNOWN_PATHS else "other"
        self.metrics.requests.labels(method, label, str(status)).inc()
        self.metrics.latency.labels(label).observe(seconds)
        for letter, count in Tally(letters or ()).items():
            self.metrics.predictions.labels(letter).inc(count)
        access_logger.info("%s:%s %s %s %d rows=%s %.1fms", client[0], client[1], method, path, status, rows,
                           1e3 * seconds)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
