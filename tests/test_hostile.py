"""Hostile input: random and mutated bytes may only give data or the project's own errors."""

import gzip

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import idx_bytes
from digitlab.data.datasets import read_idx
from digitlab.errors import DataError

VALID = idx_bytes(np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_refuse(path):
    try:
        return read_idx(path)
    except DataError as error:
        assert "\n" not in str(error)
        return None


@FUZZ
@given(payload=st.binary(max_size=300), compressed=st.booleans())
def test_random_bytes_give_data_or_a_data_error(tmp_path, payload, compressed):
    path = tmp_path / ("x.gz" if compressed else "x")
    path.write_bytes(gzip.compress(payload) if compressed and payload[:1] != b"\x1f" else payload)
    result = read_or_refuse(path)
    assert result is None or isinstance(result, torch.Tensor)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, len(VALID) + 8),
)
def test_mutated_files_give_data_or_a_data_error(tmp_path, edits, cut):
    data = bytearray(VALID + bytes(8))[:cut]
    for position, value in edits:
        if position < len(data):
            data[position] = value
    path = tmp_path / "x"
    path.write_bytes(bytes(data))
    result = read_or_refuse(path)
    if result is not None:
        assert result.numel() * result.element_size() == len(data) - 4 - 4 * result.dim()


@FUZZ
@given(dims=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4))
def test_headers_declaring_huge_data_are_refused_before_allocation(tmp_path, dims):
    header = bytes([0, 0, 0x0D, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path = tmp_path / "x"
    path.write_bytes(header + bytes(64))
    result = read_or_refuse(path)  # a multi-gigabyte claim must not be allocated: the test would run out of memory
    assert result is None or result.numel() * 4 == 64


# --- image preprocessing --------------------------------------------------------------------------


def _valid_png() -> bytes:
    import io

    from PIL import Image

    picture = Image.new("L", (40, 30), 230)
    picture.paste(20, (15, 5, 22, 25))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _valid_png()


def preprocess_or_refuse(path):
    from digitlab.errors import DigitlabError
    from digitlab.images.preprocess import preprocess_file

    try:
        result = preprocess_file(path)
    except DigitlabError as error:
        assert "\n" not in str(error)
        return None
    assert result.dtype == torch.uint8 and result.shape == (1, 28, 28)
    return result


@FUZZ
@given(payload=st.binary(max_size=400))
def test_random_bytes_as_an_image_give_a_digit_or_an_image_error(tmp_path, payload):
    path = tmp_path / "x.png"
    path.write_bytes(payload)
    preprocess_or_refuse(path)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, len(PNG)),
)
def test_mutated_images_give_a_digit_or_an_image_error(tmp_path, edits, cut):
    data = bytearray(PNG)[:cut]
    for position, value in edits:
        if position < len(data):
            data[position] = value
    path = tmp_path / "x.png"
    path.write_bytes(bytes(data))
    preprocess_or_refuse(path)


@FUZZ
@given(pixels=st.lists(st.integers(0, 255), min_size=1, max_size=64 * 64), width=st.integers(1, 64))
def test_arbitrary_pixel_arrays_give_a_digit_or_an_image_error(pixels, width):
    from digitlab.errors import DigitlabError
    from digitlab.images.preprocess import preprocess_image

    height = max(1, len(pixels) // width)
    array = np.array(pixels[: height * width] + [0] * max(0, height * width - len(pixels)), dtype=np.uint8)
    try:
        result = preprocess_image(array.reshape(height, width))
    except DigitlabError:
        return
    assert result.dtype == torch.uint8 and result.shape == (1, 28, 28)


# --- request bodies (digitlab.serving.body) -------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)


def parse_or_refuse(body: bytes):
    from starlette.exceptions import HTTPException

    from digitlab.serving.body import from_json
    from digitlab.serving.limits import Limits

    try:
        return from_json(body, Limits())
    except HTTPException as error:
        assert error.status_code in (400, 413) and "\n" not in str(error.detail), error.detail
        return None


@FUZZ
@given(body=st.binary(max_size=400))
def test_random_bytes_as_json_give_an_image_or_a_400(body):
    parse_or_refuse(body)


@FUZZ
@given(value=JSON_VALUES, wrap=st.booleans())
def test_any_json_value_gives_an_image_or_a_400(value, wrap):
    import json

    parse_or_refuse(json.dumps({"image": "iVBORw0KGgo=", "extra": value} if wrap else value).encode())
