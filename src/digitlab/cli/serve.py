"""The serve command: the web demo and its API, with the limits that keep it up (docs/serving.md)."""

from __future__ import annotations

import argparse
import os

from .common import add_device


def add_parsers(commands) -> None:
    serve = commands.add_parser("serve", help="web demo: draw a digit in the browser and watch the model decide")
    serve.add_argument(
        "run",
        nargs="*",
        help="run folders (or model.safetensors files) to serve; the page picks one or compares two "
        "(default: the shipped model)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on, 0 = any free port (default 8000)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=25,
        metavar="MB",
        help="largest image accepted, in MB (default 25); larger gets 413",
    )
    serve.add_argument(
        "--max-megapixels",
        type=float,
        default=100,
        metavar="MP",
        help="largest image accepted, in megapixels, judged before decoding (default 100)",
    )
    serve.add_argument(
        "--max-decoding", type=int, default=2, metavar="N", help="images decoded at once (default 2); the rest wait"
    )
    serve.add_argument(
        "--max-queued",
        type=int,
        default=16,
        metavar="N",
        help="images waiting to be decoded (default 16); more get 503 with Retry-After",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30,
        metavar="S",
        help="seconds a request body may take to arrive (default 30); slower gets 408",
    )
    _add_serve_limits(serve)
    serve.add_argument(
        "--token",
        default=os.environ.get("DIGITLAB_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /api/ routes (default: $DIGITLAB_TOKEN, which ps does not "
        "show; none: open)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME, e.g. the name a reverse proxy forwards (repeatable; '*': any); "
        "loopback and --host always are",
    )
    serve.add_argument(
        "--max-batch", type=int, default=64, metavar="N", help="drawings classified in one forward pass (default 64)"
    )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=2,
        metavar="MS",
        help="how long a forward pass waits for more requests to join it (default 2 ms; 0: no waiting)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the port, each with its own model and limits (default 1)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per server process for the forward pass (default 1)",
    )
    add_device(serve)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from ..runs.run import require_segmenter
    from ..serving.app import Limits, serve

    require_segmenter()  # /api/number needs it: a broken installation stops here, not at a request
    limits = Limits(
        max_upload_bytes=round(args.max_upload_mb * 1e6),
        max_pixels=round(args.max_megapixels * 1e6),
        max_decode_bytes=round(args.max_decode_mb * 1e6),
        max_decoding=args.max_decoding,
        max_queued=args.max_queued,
        max_body_memory_bytes=round(args.max_body_memory_mb * 1e6),
        body_timeout_s=args.body_timeout,
        body_grace_s=args.body_grace,
        body_min_rate=args.body_min_rate * 1000,
        max_header_bytes=round(args.max_header_kb * 1024),
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        max_client_connections=args.max_client_connections,
        max_json_depth=args.max_json_depth,
        max_json_items=args.max_json_items,
        max_json_number_chars=args.max_json_number_chars,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    serve(
        args.run or None,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        on_ready=lambda message: print(message, flush=True),
        limits=limits,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        token=args.token,
        hosts=args.allowed_host,
    )
    return 0


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """The limits of serving beyond upload size, queue and body time (digitlab.serving.limits; docs/serving.md)."""
    for flag, kind, default, metavar, text in (
        (
            "--max-decode-mb",
            float,
            160,
            "MB",
            "memory the images being decoded may hold at once, estimated from "
            "their headers (default 160); one that needs more gets 413, the others wait",
        ),
        (
            "--max-body-memory-mb",
            float,
            200,
            "MB",
            "request bodies held at once, all clients (default 200; one client: half); more gets 503",
        ),
        ("--body-grace", float, 10, "S", "seconds before a body's first byte must arrive (default 10), or 408"),
        ("--body-min-rate", float, 10, "KB/S", "average kB a second a body must keep up after that (default 10)"),
        ("--max-header-kb", float, 16, "KB", "request line and headers (default 16); more gets 400"),
        ("--header-timeout", float, 10, "S", "seconds a request's headers may take (default 10), or 408"),
        ("--keep-alive", float, 5, "S", "seconds an idle keep-alive connection stays open (default 5)"),
        ("--max-connections", int, 512, "N", "open connections and requests at once (default 512); more get 503"),
        (
            "--max-client-connections",
            int,
            64,
            "N",
            "open connections of one client address (default 64; behind a "
            "reverse proxy, every client is the proxy); more are closed",
        ),
        ("--max-json-depth", int, 4, "N", "nesting of a JSON body (default 4); deeper gets 400"),
        ("--max-json-items", int, 32, "N", "keys and values in a JSON body (default 32); more gets 400"),
        ("--max-json-number-chars", int, 64, "N", "characters in a JSON number (default 64); longer gets 400"),
    ):
        serve.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
