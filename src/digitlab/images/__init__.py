"""Pictures into 28×28 digits: finding the ink (`ink`), decoding big pictures reduced (`decode`, `heif`), a
drawing's path as batched tensor operations (`drawing`) and preprocessing photos, scans and drawings
(`preprocess`)."""

from .ink import Ink, find_ink
from .preprocess import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    Preprocessed,
    decode_image,
    image_files,
    inspect_image,
    load_image,
    preprocess_file,
    preprocess_image,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "Ink",
    "Preprocessed",
    "decode_image",
    "find_ink",
    "image_files",
    "inspect_image",
    "load_image",
    "preprocess_file",
    "preprocess_image",
]
