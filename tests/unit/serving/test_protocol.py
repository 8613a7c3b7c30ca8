"""The OIP codec: whatever encode_response writes, decode_request reads back unchanged."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlserve.errors import InvalidInput
from mlserve.serving.protocol import (
    HEADER_LENGTH,
    NUMPY_TYPES,
    datatype_of,
    decode_request,
    encode_response,
)

NUMERIC = [name for name in NUMPY_TYPES if name != "BYTES"]
FLOAT_WIDTHS: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn, binary: bool) -> tuple[str, np.ndarray]:
    """A datatype and an array of it; JSON cannot carry infinities, so only binary gets them."""
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        texts = st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8
        )
        values = draw(st.lists(texts, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return datatype, array.reshape(shape)
    dtype = NUMPY_TYPES[datatype]
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=FLOAT_WIDTHS[dtype.itemsize], allow_infinity=binary)
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


def response_as_request(body: bytes, headers: dict[str, str]) -> tuple[bytes, int | None]:
    """Turn a response's outputs into a request's inputs: the tensor encoding is the same."""
    length = int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else len(body)
    document = orjson.loads(body[:length])
    header = orjson.dumps({"inputs": document["outputs"], "id": document.get("id")})
    has_binary = HEADER_LENGTH in headers
    return header + body[length:], len(header) if has_binary else None


def as_comparable(datatype: str, array: np.ndarray) -> np.ndarray:
    """BYTES decode as str from JSON and as bytes from binary: compare them as bytes."""
    if datatype != "BYTES":
        return array
    return np.asarray([v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)])


@settings(max_examples=300, deadline=None, database=None)
@given(binary=st.booleans(), data=st.data())
def test_encoded_tensors_decode_to_the_same_arrays(binary: bool, data: st.DataObject) -> None:
    datatype, array = data.draw(tensors(binary))
    encoded = encode_response("m", "1", [("t", array)], [binary], request_id="r-1")
    body, header_length = response_as_request(encoded.body, encoded.headers)

    decoded = decode_request(body, header_length)

    [tensor] = decoded.inputs
    assert decoded.id == "r-1"
    assert tensor.name == "t"
    assert tensor.datatype == datatype
    assert tensor.shape == array.shape
    assert tensor.data.shape == array.shape
    if datatype != "BYTES":
        assert tensor.data.dtype == NUMPY_TYPES[datatype]
    np.testing.assert_array_equal(
        as_comparable(datatype, tensor.data), as_comparable(datatype, array)
    )


@settings(max_examples=100, deadline=None, database=None)
@given(
    flags=st.lists(st.booleans(), min_size=1, max_size=4),
    data=st.data(),
)
def test_several_tensors_mixing_json_and_binary(flags: list[bool], data: st.DataObject) -> None:
    drawn = [data.draw(tensors(binary)) for binary in flags]
    outputs = [(f"t{i}", array) for i, (_, array) in enumerate(drawn)]
    encoded = encode_response("m", "1", outputs, flags)
    body, header_length = response_as_request(encoded.body, encoded.headers)

    decoded = decode_request(body, header_length)

    assert [t.name for t in decoded.inputs] == [name for name, _ in outputs]
    for tensor, (datatype, array) in zip(decoded.inputs, drawn, strict=True):
        np.testing.assert_array_equal(
            as_comparable(datatype, tensor.data), as_comparable(datatype, array)
        )


@pytest.mark.parametrize("datatype", NUMERIC)
def test_datatype_of_every_numeric_type_in_either_byte_order(datatype: str) -> None:
    dtype = NUMPY_TYPES[datatype]
    assert datatype_of(np.zeros(2, dtype=dtype)) == datatype
    assert datatype_of(np.zeros(2, dtype=dtype.newbyteorder(">"))) == datatype


def test_datatype_of_text_is_bytes() -> None:
    assert datatype_of(np.array(["a", "b"])) == "BYTES"
    assert datatype_of(np.array([b"a"], dtype=object)) == "BYTES"


def test_big_endian_outputs_are_sent_little_endian() -> None:
    array = np.array([1.5, -2.0], dtype=">f8")
    encoded = encode_response("m", "1", [("t", array)], [True])
    length = int(encoded.headers[HEADER_LENGTH])
    assert encoded.body[length:] == np.array([1.5, -2.0], dtype="<f8").tobytes()


def test_outputs_without_binary_are_plain_json() -> None:
    encoded = encode_response("m", "7", [("p", np.array(["a", "b"], dtype=object))], [False])
    assert encoded.media_type == "application/json"
    assert encoded.headers == {}
    assert orjson.loads(encoded.body) == {
        "model_name": "m",
        "model_version": "7",
        "outputs": [{"name": "p", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}],
    }


def request(**tensor: Any) -> bytes:
    """A JSON request with one tensor."""
    return orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64", **tensor}]})


def request_text(**tensor: Any) -> bytes:
    """A JSON request with one tensor, as json.dumps writes it (orjson.dumps refuses integers
    past 64 bits; json.dumps writes their digits)."""
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP64", **tensor}]}).encode()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # np.prod wraps around to 0 at 2**64: the shape must not pass as holding no elements
        (request(shape=[2**32, 2**32], data=[]), "shape needs 18446744073709551616 elements"),
        (request(shape=[0, 2**63], data=[]), "too large"),
        (request(shape=[2], data=[1.0, "a"]), "FP64 data must be numbers"),
        (request_text(shape=[2], data=[10**400, "a"]), "FP64 data must be numbers"),
        (request(shape=[1], data=[[1.0, 2.0], [3.0]]), "ragged"),
    ],
)
def test_invalid_tensors_raise_invalid_input(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_request(body)


def test_nulls_among_numbers_decode_as_nan() -> None:
    [tensor] = decode_request(request(shape=[3], data=[1.0, None, 2.0])).inputs
    np.testing.assert_array_equal(tensor.data, [1.0, np.nan, 2.0])


def test_nulls_in_nested_data_decode_as_nan() -> None:
    data = [[1.0, None], [None, 2.0]]
    [tensor] = decode_request(request(shape=[2, 2], data=data)).inputs
    np.testing.assert_array_equal(tensor.data, [[1.0, np.nan], [np.nan, 2.0]])


def test_integers_past_float64_decode_as_infinities() -> None:
    data = [[10**400, None], [-(10**400), 2]]
    [tensor] = decode_request(request_text(shape=[2, 2], data=data)).inputs
    np.testing.assert_array_equal(tensor.data, [[np.inf, np.nan], [-np.inf, 2.0]])


def test_uint64_beyond_int64_decodes_exactly_from_json() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "UINT64",
                    "shape": [3],
                    "data": [2**64 - 1024, 0, 2**63 + 1],
                }
            ]
        }
    )
    [tensor] = decode_request(body).inputs
    assert tensor.data.dtype == np.uint64
    assert tensor.data.tolist() == [2**64 - 1024, 0, 2**63 + 1]


@pytest.mark.parametrize("data", [[2**63 + 1, 0.5], [2**63 + 1, -1]])
def test_uint64_still_refuses_fractions_and_negatives(data: list[float]) -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "UINT64", "shape": [2], "data": data}]}
    )
    with pytest.raises(InvalidInput, match="UINT64"):
        decode_request(body)


def test_empty_bytes_tensor_decodes_from_json() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [0], "data": []}]})
    [tensor] = decode_request(body).inputs
    assert tensor.data.shape == (0,)
    assert tensor.data.dtype == object


def test_bytes_from_json_keep_trailing_nul_characters() -> None:
    """numpy's fixed-width strings drop trailing NULs: "\\x00" once decoded as "", a missing
    value, where every other door reads the text "\\x00"."""
    data = [["\x00", "a\x00"], ["", "b"]]
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2, 2], "data": data}]}
    )
    [tensor] = decode_request(body).inputs
    assert tensor.data.dtype == object
    assert tensor.data.reshape(2, 2).tolist() == data
