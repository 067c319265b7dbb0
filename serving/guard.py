"""What the offer service checks before a request reaches the models, as ASGI middleware, and how it logs the
requests it refuses.

In order, for every request:
1. the Host header must name an allowed host (LOYAL_ALLOWED_HOSTS, comma-separated; default the loopback names):
   400 otherwise, Starlette's TrustedHostMiddleware (a page on another site cannot reach the service through a
   name that resolves to loopback, DNS rebinding);
2. with LOYAL_API_TOKEN set, every route but the open ones (health, metrics, the API's documentation) needs
   `Authorization: Bearer <token>`, compared in constant time: 401 otherwise;
3. a body must be `application/json` (415) and at most LOYAL_MAX_BODY_BYTES (default 1 MiB; 413), read before the
   request goes on, so a large body is refused without being held in memory whole;
4. while the models are not loaded, /readyz answers 503 with the reason and the API routes 503, but for
   /events, which needs no model;
5. answers about customers carry `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.

Refusals are logged by the access log as one line (route and status). BentoML logs a request its validation refuses
as an ERROR with a traceback that quotes the input, customer ids included; `ClientErrorsInOneLine` turns those
into one WARNING line naming the route, the status and the fields, never a value.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from dataclasses import dataclass

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.middleware.trustedhost import TrustedHostMiddleware

TOKEN_ENV = "LOYAL_API_TOKEN"
ALLOWED_HOSTS_ENV = "LOYAL_ALLOWED_HOSTS"
MAX_BODY_ENV = "LOYAL_MAX_BODY_BYTES"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Open without a token: probes, the metrics scraper, and the API's own documentation (which holds no data).
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/static_content/")
BODY_METHODS = ("POST", "PUT", "PATCH")
WITHOUT_MODELS = ("/events",)  # routes that answer while the models load: the shop's events are never turned away
PRIVATE_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


@dataclass
class Readiness:
    """Why the service cannot answer yet (None once it can); set by the service, read by the guard."""
    reason: str | None = "loading the models"


readiness = Readiness()


def _settings() -> tuple[list[str], bytes | None, int]:
    hosts = [h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, ",".join(LOOPBACK)).split(",") if h.strip()]
    token = os.environ.get(TOKEN_ENV) or None
    limit = int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY_BYTES)
    return hosts, token.encode() if token else None, limit


class AllowedHosts(TrustedHostMiddleware):
    """Starlette's host check, with the hosts read from the environment when the app is built."""

    def __init__(self, app) -> None:
        super().__init__(app, allowed_hosts=_settings()[0])


class Guard:
    """Token, content type, body size and readiness, in that order (see the module's docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        _, self.token, self.max_body = _settings()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        is_open = path == "/" or path.startswith(OPEN_PATHS)
        if path == "/readyz" and readiness.reason is not None:
            return await _answer(send, 503, {"ready": False, "reason": readiness.reason})
        if self.token is not None and not is_open and not self._authorised(headers):
            return await _answer(send, 401, {"error": "a bearer token is required (Authorization: Bearer ...)"},
                                 {"www-authenticate": "Bearer"})
        if method in BODY_METHODS:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return await _answer(send, 415, {"error": "send the body as application/json"})
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                return await _answer(send, 413, {"error": f"the body is over {self.max_body} bytes"})
            body, complete = await _read_body(receive, self.max_body)
            if not complete:
                return await _answer(send, 413, {"error": f"the body is over {self.max_body} bytes"})
            receive = _replay(body)
        if not is_open and readiness.reason is not None and path not in WITHOUT_MODELS:
            return await _answer(send, 503, {"error": f"not ready: {readiness.reason}"})
        await self.app(scope, receive, send if is_open else _private(send))

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, False) as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _private(send):
    """A `send` that marks an answer about a customer as not to be cached (by a proxy or a browser) nor sniffed as
    another type than it says."""
    async def send_private(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *PRIVATE_HEADERS]}
        await send(message)

    return send_private


def _replay(body: bytes):
    """A `receive` that gives the body already read, then waits for the client to go."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _answer(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class ClientErrorsInOneLine(logging.Filter):
    """On BentoML's server logger: a request refused for its content (pydantic's ValidationError, or a BentoML
    error below 500) becomes one WARNING line with the route, the status and the fields; the traceback, which quotes
    the input, is dropped. Anything else, a real fault, passes as it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            fields = sorted({".".join(str(part) for part in e["loc"] if not isinstance(part, int)) or "body"
                             for e in error.errors(include_input=False, include_url=False)})
            status, detail = 400, f"invalid {', '.join(fields)}"
        elif isinstance(error, BentoMLException) and int(error.error_code) < 500:
            status, detail = int(error.error_code), type(error).__name__
        else:
            return True
        route = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "%s %s: %s", (route, status, detail)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def log_client_errors_in_one_line() -> None:
    """Install ClientErrorsInOneLine on the logger BentoML reports request errors with (once)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())
