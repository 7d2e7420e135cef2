"""A picture route's request body: read within its limits, then parsed off the event loop into image bytes.

The body streams in through a guard (`Body`) that refuses it once it passes its byte limit (413), once it falls
behind its deadline (408: its first byte within `body_grace_s`, then on average `body_min_rate` bytes a second,
and all of it within `body_timeout_s`), and once the bodies held by all clients, or by this one, pass their
share of `max_body_memory_bytes` (503). A JSON body is checked by a scan of its tokens (depth, keys and values,
number length) before json.loads sees it, so a body of three million keys or one nested 100,000 deep costs a
regular-expression pass and a 400, and both run in a worker thread. Names given by the client are cleaned
before they appear in a message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import ctypes
import functools
import json
import re
from pathlib import Path

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .batching import Busy
from .limits import Limits

USAGE = 'send an image file as multipart/form-data (field "file") or JSON {"image": "<base64 PNG>"}'
RETRY_AFTER_S = 2  # what a 503 tells the client to wait
TRIM_AFTER_BYTES = 8_000_000  # a body bigger than this gives its memory back to the system when done
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)
# one JSON token: a string (unrolled, so linear), a punctuation mark, a scalar (number, true...), or blanks
TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+|\s+')


class BodyMemory:
    """The bytes of request bodies held at once, by client: all together at most `total`, one client half."""

    def __init__(self, total: int):
        self.total, self.held, self.by_client = total, 0, collections.Counter[str]()

    def take(self, client: str, size: int) -> None:
        if self.held + size > self.total or self.by_client[client] + size > self.total / 2:
            raise Busy(f"busy: request bodies fill the server's memory; retry in {RETRY_AFTER_S} s", RETRY_AFTER_S)
        self.held += size
        self.by_client[client] += size

    def give_back(self, client: str, size: int) -> None:
        self.held -= size
        self.by_client[client] -= size
        if self.by_client[client] <= 0:
            del self.by_client[client]


class Body:
    """An ASGI `receive` with the body's limits (see the module); `held` bytes are given back by `release()`."""

    def __init__(self, request: Request, limits: Limits, memory: BodyMemory, limit: int):
        self.receive, self.limits, self.memory, self.limit = request.receive, limits, memory, limit
        self.client = client_of(request)
        self.seen = self.held = 0
        self.began: float | None = None

    async def __call__(self):
        loop = asyncio.get_running_loop()
        self.began = self.began or loop.time()
        limits = self.limits
        whole = self.began + limits.body_timeout_s
        keeping_up = self.began + limits.body_grace_s + self.seen / limits.body_min_rate
        try:
            message = await asyncio.wait_for(self.receive(), max(min(whole, keeping_up) - loop.time(), 0))
        except TimeoutError:
            if whole <= keeping_up:
                raise _BodyTooSlow(f"the request body did not arrive within {limits.body_timeout_s:g} s") from None
            raise _BodyTooSlow(
                f"the request body arrived too slowly (its first byte is due within {limits.body_grace_s:g} s, "
                f"then {limits.body_min_rate / 1000:g} kB a second)"
            ) from None
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.seen += size
            if self.seen > self.limit:
                raise _BodyTooLarge()
            self.memory.take(self.client, size)
            self.held += size
        return message

    def release(self) -> None:
        self.memory.give_back(self.client, self.held)
        self.held = 0


def client_of(request: Request) -> str:
    """Who sent a request, for fair shares: its address (behind a proxy, the proxy's)."""
    return request.client.host if request.client else ""


@contextlib.asynccontextmanager
async def received(request: Request, limits: Limits, memory: BodyMemory):
    """The image's bytes and a name for messages, from a multipart upload or a JSON base64 string, for the
    duration of the block (the body's share of memory is given back after it).

    The body is capped while it streams in (Content-Length is checked first), so an oversized upload is
    refused before it is held in memory, let alone decoded; see the module for its deadlines and its share
    of memory.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "multipart/form-data"):
        raise HTTPException(415, f"unsupported content type {clean(kind) or 'none'!r}: {USAGE}")
    limit = limits.body_limit(kind)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_large("request", int(declared), limits))
    body = Body(request, limits, memory, limit)
    capped = Request(request.scope, body)
    try:
        try:
            if kind == "application/json":
                found = await run_in_threadpool(from_json, await capped.body(), limits)
            else:
                found = await _from_form(capped, limits)
        except _BodyTooLarge:
            raise HTTPException(413, too_large("request", limit, limits, exact=False)) from None
        except _BodyTooSlow as slow:
            raise HTTPException(408, str(slow), headers={"Connection": "close"}) from None
        yield found
    finally:
        body.release()
        if body.seen > TRIM_AFTER_BYTES:
            await run_in_threadpool(give_memory_back)


@functools.cache
def _libc():
    """glibc, or None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> None:
    """Ask glibc to keep big buffers (1 MB and more: decoded bands, bodies) in their own mappings, returned to the
    system when freed, instead of raising that threshold as it goes (to 32 MB) and keeping them in its heaps; and
    to use at most 4 heaps for the server's threads. Call once, before the server starts its threads."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(M_ARENA_MAX, 4)


def give_memory_back() -> None:
    """Return memory freed after a big body or a big decoding to the system: glibc keeps it in its per-thread
    arenas otherwise, and the server's idle memory grew from 350 to 720 MB over benchmarks/serve_hostile.py's
    attacks without this."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def from_json(body: bytes, limits: Limits) -> tuple[bytes, str]:
    """A JSON body's image bytes and name; 400 for anything malformed, 413 for an image over the limit."""
    _scan(body, limits)
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HTTPException(400, f"malformed JSON ({error})") from None
    except (ValueError, RecursionError) as error:  # numbers past Python's digit limit; nesting past the stack
        raise HTTPException(400, f"malformed JSON ({type(error).__name__})") from None
    if not isinstance(value, dict) or not isinstance(value.get("image"), str):
        raise HTTPException(400, f'expected a JSON object with an "image" string: {USAGE}')
    text = value["image"]
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f'"image" is not valid base64 ({clean(str(error))})') from None
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(413, too_large("image", len(data), limits))
    name = value.get("name")
    return data, clean(name if isinstance(name, str) else "") or "image"


def _scan(body: bytes, limits: Limits) -> None:
    """400 for a JSON body deeper, with more keys and values, or with a longer number than `limits` allow;
    stops at the first excess, so its cost is bounded by the limits, not by the body."""
    depth = items = 0
    for token in TOKEN.finditer(body):
        first = body[token.start()]
        if first in b"{[":
            depth += 1
            if depth > limits.max_json_depth:
                raise HTTPException(400, f"malformed JSON (nested deeper than {limits.max_json_depth})")
        elif first in b"}]":
            depth -= 1
        elif first not in b":, \t\r\n":
            items += 1
            if items > limits.max_json_items:
                raise HTTPException(400, f"malformed JSON (more than {limits.max_json_items} keys and values)")
            if first != ord('"') and token.end() - token.start() > limits.max_json_number_chars:
                raise HTTPException(
                    400, f"malformed JSON (a value of more than {limits.max_json_number_chars} characters)"
                )


async def _from_form(request: Request, limits: Limits) -> tuple[bytes, str]:
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, f'the form has no file in its "file" field: {USAGE}')
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, too_large("image", limits.max_upload_bytes, limits, exact=False))
        return data, clean(Path(upload.filename or "upload").name) or "upload"


def clean(name: str, most: int = 100) -> str:
    """A client's name for a message or a log: printable characters only (a lone surrogate, a line break or a
    control character becomes '?'), at most `most` of them."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in name[:most])


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


def too_large(what: str, size: int, limits: Limits, exact: bool = True) -> str:
    amount = f"{size:,} bytes" if exact else f"more than {size:,} bytes"
    return f"{what} is {amount}; images are limited to {limits.max_upload_bytes:,} bytes ({limits.upload})"
