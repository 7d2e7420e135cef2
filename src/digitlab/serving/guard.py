"""What every answer of `digitlab serve` carries and what every request must show, as one ASGI middleware.

- A Host allow-list: a web page elsewhere can point its own domain name at 127.0.0.1 (DNS rebinding) and
  drive a local server from the visitor's browser, but the browser then sends that name as Host. The server
  answers only to loopback names, the host it was bound to and the names it is given; bound to every
  address (0.0.0.0 or ::), it also answers to any address typed as digits (a phone on the same network uses
  one), since a rebinding page cannot send those.
- `--token`: with a token, /api/ routes want `Authorization: Bearer TOKEN` (401 otherwise); the page, its
  files and /healthz stay open, and the page asks for the token once and keeps it in the tab's session.
- Security headers on every answer: a Content-Security-Policy that lets the page load only its own scripts,
  styles and data (and never be framed), X-Content-Type-Options, Referrer-Policy and X-Frame-Options.
  /docs and /redoc, whose bundled Swagger UI and ReDoc start from an inline script, get that one allowance.

A request line and headers over the limit that arrived in one read (h11 measures only an incomplete head in its
buffer) get 431 here. Every refusal is JSON {"error": ...}, like every other error of the API. Starlette's TrustedHostMiddleware
answers in plain text and knows no wildcard-address rule, hence this small one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names a server bound to `bound` answers to: loopback, `bound` and `extra` (lower case, no port);
    None when `extra` holds '*' (any)."""
    names = {name.strip().lower().strip("[]") for name in (*LOOPBACK_HOSTS, bound, *extra) if name.strip()}
    return None if "*" in names else frozenset(names)


class Guard:
    """ASGI middleware: the Host allow-list (None: any host), the bearer token (None: none) and the headers."""

    def __init__(
        self,
        app,
        hosts: frozenset[str] | None,
        token: str | None = None,
        any_address: bool = False,
        max_header_bytes: int | None = None,
    ):
        self.app, self.hosts, self.token, self.any_address = app, hosts, token, any_address
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        policy = DOCS_POLICY if path in ("/docs", "/redoc") or path.startswith("/docs/") else PAGE_POLICY
        headers = [*HEADERS, (b"content-security-policy", policy.encode())]

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        if self.max_header_bytes is not None and _head_bytes(scope) > self.max_header_bytes:
            limit = f"{self.max_header_bytes:,} bytes"
            return await _refuse(guarded_send, 431, f"the request line and headers are more than {limit}")
        host = _header(scope, b"host")
        if not self._host_allowed(host):
            shown = host.encode("ascii", "backslashreplace").decode()[:100]
            return await _refuse(guarded_send, 400, f"this server does not answer to the host {shown!r}")
        if self.token is not None and path.startswith("/api/") and not self._authorized(scope):
            challenge = [(b"www-authenticate", b'Bearer realm="digitlab"')]
            return await _refuse(
                guarded_send, 401, "this server wants its token: Authorization: Bearer TOKEN", challenge
            )
        return await self.app(scope, receive, guarded_send)

    def _host_allowed(self, host: str) -> bool:
        if self.hosts is None:
            return True
        name = _without_port(host.strip().lower())
        if name in self.hosts:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _authorized(self, scope) -> bool:
        assert self.token is not None
        kind, _, given = _header(scope, b"authorization").partition(" ")
        return kind.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _head_bytes(scope) -> int:
    """About the size of the request line and headers as sent (h11 checks only a head still incomplete in its buffer,
    so one that arrived whole in a single read is measured here)."""
    line = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


def _without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


async def _refuse(send, status: int, error: str, headers: list | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start_headers + (headers or [])})
    await send({"type": "http.response.body", "body": body})
