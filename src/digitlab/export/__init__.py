"""Exporting a model: verified ONNX and TorchScript files (`onnx`) and a static web page (`web`)."""

from .onnx import export_model, load_torchscript, read_onnx_metadata
from .web import export_web

__all__ = [
    "export_model",
    "export_web",
    "load_torchscript",
    "read_onnx_metadata",
]
