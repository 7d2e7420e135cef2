"""The export command: a run's model as ONNX, TorchScript or a static web page, verified against PyTorch."""

from __future__ import annotations

import sys


def add_parsers(commands) -> None:
    export = commands.add_parser(
        "export", help="export a run's model to ONNX or TorchScript, verified, or as a static web page (web)"
    )
    export.add_argument("run", help="run folder (or its model.safetensors)")
    export.add_argument(
        "--format",
        choices=("onnx", "torchscript", "web"),
        default="onnx",
        help="file format (default onnx); web: a folder whose index.html runs the model in the browser, no server",
    )
    export.add_argument(
        "--out",
        metavar="PATH",
        help="destination (default RUN/model.onnx, RUN/model.torchscript.pt or the folder RUN/web)",
    )
    export.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    from ..export.onnx import export_model
    from ..export.web import export_web

    if args.format == "web":
        page = export_web(args.run, out=args.out, log=lambda message: print(message, file=sys.stderr))
        print(
            f"wrote {page['path']}/index.html ({len(page['files'])} files, {page['bytes'] / 1e6:.1f} MB) — the model "
            f"verified against PyTorch on {page['count']:,} test digits; open it from disk or any static host"
        )
        return 0
    report = export_model(args.run, args.format, out=args.out)
    print(
        f"wrote {report['path']} — verified against PyTorch on {report['count']:,} test digits: "
        f"max |logit difference| {report['max_abs_diff']:.2g}, identical predictions"
    )
    return 0
