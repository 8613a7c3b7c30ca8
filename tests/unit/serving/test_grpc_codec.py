"""ModelInferRequest decoding and ModelInferResponse encoding, for every datatype."""

from __future__ import annotations

import numpy as np
import pytest

from mlserve.errors import InvalidInput
from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.grpc.codec import (
    CONTENTS_FIELDS,
    decode_infer_request,
    encode_infer_response,
)
from mlserve.serving.protocol import NUMPY_TYPES, decode_request, to_binary

VALUES = {
    "BOOL": np.array([[True, False], [False, True]]),
    "BYTES": np.array([[b"a", b""], [b"\x00z", "é".encode()]], dtype=object),
    **{
        name: np.array([[0, 1], [2, 3]], dtype=dtype)
        for name, dtype in NUMPY_TYPES.items()
        if name not in ("BOOL", "BYTES")
    },
}
"""A 2x2 tensor of each datatype."""


def request_with(datatype: str, values: np.ndarray, *, raw: bool) -> pb.ModelInferRequest:
    """A request carrying ``values`` as one input, raw or typed."""
    request = pb.ModelInferRequest(model_name="m", id="r-1")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=values.shape)
    if raw:
        request.raw_input_contents.append(to_binary(values, datatype))
    else:
        getattr(tensor.contents, CONTENTS_FIELDS[datatype]).extend(values.reshape(-1).tolist())
    return request


@pytest.mark.parametrize(
    ("datatype", "raw"),
    [(d, True) for d in VALUES] + [(d, False) for d in CONTENTS_FIELDS],  # FP16 travels raw only
)
def test_every_datatype_decodes_to_the_rest_decoders_tensor(datatype: str, raw: bool) -> None:
    values = VALUES[datatype]
    decoded = decode_infer_request(request_with(datatype, values, raw=raw))
    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 2))
    assert decoded.id == "r-1"
    # The same tensor as the REST decoder makes of the binary form.
    chunk = to_binary(values, datatype)
    header = (
        b'{"inputs": [{"name": "x", "datatype": "%s", "shape": [2, 2], '
        b'"parameters": {"binary_data_size": %d}}]}' % (datatype.encode(), len(chunk))
    )
    (rest,) = decode_request(header + chunk, len(header)).inputs
    assert tensor.data.dtype == rest.data.dtype
    assert tensor.data.tolist() == rest.data.tolist()


def test_fp16_in_typed_contents_is_refused() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="raw_input_contents"):
        decode_infer_request(request)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.ClearField("inputs"), "at least one tensor"),
        (lambda r: r.raw_input_contents.append(b"\0" * 8), "2 entries for 1 inputs"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP8"), "unknown datatype"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), "non-negative"),
        (lambda r: r.inputs[0].shape.append(2), "bytes of binary data do not hold"),
        (lambda r: setattr(r.inputs[0], "name", ""), "has no 'name'"),
        (
            lambda r: r.inputs[0].contents.fp64_contents.append(1.0),
            "both contents and raw_input_contents",
        ),
    ],
)
def test_malformed_requests_are_invalid_input(change: object, message: str) -> None:
    request = request_with("FP64", VALUES["FP64"], raw=True)
    change(request)  # type: ignore[operator]  # the lambdas above
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(request)


def test_typed_contents_in_the_wrong_field_name_the_right_one() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="INT64", shape=[2]).contents.fp64_contents.extend(
        [1.0, 2.0]
    )
    with pytest.raises(InvalidInput, match="INT64 goes in int64_contents, not fp64_contents"):
        decode_infer_request(request)


@pytest.mark.parametrize("datatype", ["INT8", "UINT16"])
def test_narrow_integers_are_range_checked(datatype: str) -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1])
    getattr(tensor.contents, CONTENTS_FIELDS[datatype]).append(70_000)
    with pytest.raises(InvalidInput, match=f"out of range for {datatype}"):
        decode_infer_request(request)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_outputs_encode_raw_or_typed(raw: bool) -> None:
    labels = np.array(["setosa", "virginica"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    response = encode_infer_response(
        "iris", "2", [("predict", labels), ("predict_proba", proba)], raw=raw
    )
    assert (response.model_name, response.model_version) == ("iris", "2")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("predict", "BYTES", [2]),
        ("predict_proba", "FP64", [2, 2]),
    ]
    if raw:
        assert response.raw_output_contents[1] == proba.tobytes()
        assert response.raw_output_contents[0] == to_binary(labels, "BYTES")
    else:
        assert not response.raw_output_contents
        assert list(response.outputs[0].contents.bytes_contents) == [b"setosa", b"virginica"]
        assert list(response.outputs[1].contents.fp64_contents) == proba.reshape(-1).tolist()


def test_typed_fp16_outputs_go_as_fp32() -> None:
    response = encode_infer_response("m", "1", [("y", np.array([0.5], np.float16))], raw=False)
    assert response.outputs[0].datatype == "FP32"
    assert list(response.outputs[0].contents.fp32_contents) == [0.5]
