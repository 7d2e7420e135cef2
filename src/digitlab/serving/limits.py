"""What `digitlab serve` accepts and how much one client may cost it: every limit in one typed dataclass.

Each field has a `digitlab serve` flag of the same name (docs/serving.md lists them with what a request that
passes one gets). The connection-level limits are enforced by uvicorn and h11 themselves (header size:
h11's max_incomplete_event_size; open connections: uvicorn's limit_concurrency; idle keep-alive:
timeout_keep_alive); the time to send the headers by digitlab.serving.protocol, which neither enforces;
the rest by the app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ServeError
from ..images.preprocess import MAX_PIXELS

ENVELOPE_BYTES = 64 * 1024  # room for multipart headers, a data-URL prefix and line breaks around the image


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how much it does at once (defaults fit phone photos)."""

    max_upload_bytes: int = 25 * 1000 * 1000  # an image file, or the bytes a base64 string decodes to: 25 MB
    max_pixels: int = MAX_PIXELS  # judged from the header, before any pixel is decoded: 100 megapixels
    max_decode_bytes: int = 160 * 1000 * 1000  # memory the images being decoded may hold at once, estimated from
    # their headers: one over it is refused (413), the others wait until they fit
    max_decoding: int = 2  # images decoded and classified at once
    max_queued: int = 16  # requests with their body in hand waiting for a decoding slot; one more gets 503
    max_body_memory_bytes: int = 200 * 1000 * 1000  # request bodies held at once, all clients together (503 past
    # it); one client may hold half of it
    body_timeout_s: float = 30.0  # a request body must arrive within this many seconds, or 408
    body_grace_s: float = 10.0  # ... and its first byte within this many, ...
    body_min_rate: float = 10_000.0  # ... and after that keep up this many bytes a second on average, or 408
    max_header_bytes: int = 16 * 1024  # request line and headers (h11's max_incomplete_event_size), or 400
    header_timeout_s: float = 10.0  # seconds from a request's first byte (or the connection) to its last header
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
    max_connections: int = 512  # open connections and requests at once (uvicorn's limit_concurrency): 503 past it
    max_client_connections: int = 64  # open connections of one client address: more are closed as they open
    max_json_depth: int = 4  # nesting of a JSON body (a valid one is 1 deep), or 400
    max_json_items: int = 32  # keys and values in a JSON body (a valid one has 2 or 4), or 400
    max_json_number_chars: int = 64  # characters in one JSON number, or 400
    max_batch: int = 64  # /api/predict images classified in one forward pass at most
    max_wait_ms: float = 2.0  # how long a forward pass waits for more requests to join its batch

    def __post_init__(self):
        counts = (self.max_upload_bytes, self.max_pixels, self.max_decoding, self.max_batch, self.max_connections)
        counts += (self.max_client_connections,)
        sizes = (self.max_decode_bytes, self.max_body_memory_bytes, self.max_header_bytes)
        json = (self.max_json_depth, self.max_json_items, self.max_json_number_chars)
        times = (self.body_timeout_s, self.body_grace_s, self.body_min_rate, self.header_timeout_s, self.keep_alive_s)
        if min(*counts, *sizes, *json) < 1 or min(times) <= 0 or self.max_queued < 0 or self.max_wait_ms < 0:
            raise ServeError(f"limits must be positive (the queue and the batch wait may be 0): {self}")

    @property
    def upload(self) -> str:
        """The byte limit as a person reads it: '25 MB'."""
        return f"{self.max_upload_bytes / 1e6:.3g} MB"

    def body_limit(self, kind: str) -> int:
        """The most bytes a request body of `kind` may hold: base64 is 4 characters per 3 bytes."""
        image = 4 * math.ceil(self.max_upload_bytes / 3) if kind == "application/json" else self.max_upload_bytes
        return image + ENVELOPE_BYTES
