"""uvicorn set up with the connection-level limits: header size, header time, open connections, idle keep-alive.

uvicorn and h11 enforce most of them themselves, and are used for that: h11's max_incomplete_event_size
refuses a request line and headers over `max_header_bytes` (uvicorn answers 400 and closes), uvicorn's
limit_concurrency answers 503 past `max_connections` connections or requests, and its timeout_keep_alive
closes an idle keep-alive connection. (httptools, uvicorn's faster parser, has no header size limit: a 120 MB
header was accepted, so the server runs on h11.) Neither bounds the time the headers take: a client sending
one header line every few seconds held its connection for ever. `GuardedH11` adds that: from a connection's
start, or from the first byte of the next request on a kept-alive one, its headers must be complete within
`header_timeout_s`, or it gets 408 and is closed. Nor do they share connections between clients: one client
could open all `max_connections` and leave every other one to uvicorn's 503, so a client's connections past
`max_client_connections` are closed as they open. Log lines escape anything unprintable a client sent.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import Limits


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request line and headers and a cap on each client's open
    connections (see the module)."""

    header_timeout_s = 10.0  # set per server by `protocol_for`, with the two below
    max_client_connections = 64
    by_client: ClassVar[collections.Counter[str]] = collections.Counter()  # open connections per client address
    _header_deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_deadline = None
        address = self.client[0] if self.client else ""
        self.by_client[address] += 1
        self._counted = address
        if self.by_client[address] > self.max_client_connections:
            transport.abort()  # a client past its share of connections: closed before a byte is read
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            self.by_client[self._counted] -= 1
            if self.by_client[self._counted] <= 0:
                del self.by_client[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        body = json.dumps({"error": f"the request headers did not arrive within {self.header_timeout_s:g} s"}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)  # the h11 state machine is left behind with the connection
        self.transport.close()


def protocol_for(limits: Limits) -> type[GuardedH11]:
    """GuardedH11 with `limits`' header time and connections per client, counting this server's connections."""
    settings = {
        "header_timeout_s": limits.header_timeout_s,
        "max_client_connections": limits.max_client_connections,
        "by_client": collections.Counter(),
    }
    return type("GuardedH11WithLimits", (GuardedH11,), settings)


def uvicorn_config(app, limits: Limits, access_log: bool = False) -> uvicorn.Config:
    """The uvicorn configuration that enforces `limits`' connection-level limits (see the module)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(each, Printable) for each in logger.filters):
            logger.addFilter(Printable())
    return uvicorn.Config(
        app,
        http=protocol_for(limits),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # used as a float by call_later
        access_log=access_log,
        log_level="info" if access_log else "warning",
        timeout_graceful_shutdown=5,
    )


class Printable(logging.Filter):
    """Escapes what a client sent into a log line: no line break, control character or lone surrogate gets in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_printable(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")
