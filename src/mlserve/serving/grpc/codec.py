"""ModelInferRequest to decoded tensors, and outputs to ModelInferResponse.

The gRPC face of `serving.protocol`: a request becomes the same `InferRequest` of `Tensor`s the
REST decoder builds (raw bytes through the same `from_binary`), so every rule after decoding is
REST's. Tensors arrive in ``raw_input_contents`` (what tritonclient sends) or in the typed
``contents`` field of their datatype; outputs go back raw when the request came raw, typed
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlserve.errors import InvalidInput
from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.protocol import (
    NUMPY_TYPES,
    InferRequest,
    RequestedOutput,
    Tensor,
    datatype_of,
    from_binary,
    to_binary,
)

CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed field of each datatype; FP16 has none (the protocol sends it raw only)."""
NARROW_INTEGERS = frozenset({"INT8", "INT16", "UINT8", "UINT16"})
"""Datatypes carried in a wider field: their values are range-checked."""


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The request's tensors, checked once (names, datatypes, shapes, element counts); raises
    InvalidInput naming the fault."""
    inputs = message.inputs
    if not inputs:
        raise InvalidInput("'inputs' must hold at least one tensor")
    raw = message.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs: send one each"
        )
    tensors = [
        _decode_input(tensor, index, raw[index] if raw else None)
        for index, tensor in enumerate(inputs)
    ]
    outputs = [
        RequestedOutput(output.name, None, parameters_of(output.parameters))
        for output in message.outputs
    ]
    return InferRequest(
        inputs=tensors,
        outputs=outputs,
        id=message.id or None,
        parameters=parameters_of(message.parameters),
    )


def parameters_of(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf parameter map (InferParameter or ModelRepositoryParameter values) as plain
    values."""
    plain: dict[str, Any] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        plain[key] = None if choice is None else getattr(value, choice)
    return plain


def _decode_input(
    tensor: pb.ModelInferRequest.InferInputTensor, index: int, raw: bytes | None
) -> Tensor:
    name = tensor.name
    if not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    datatype = tensor.datatype
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(NUMPY_TYPES)}"
        )
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)  # exact: np.prod wraps around at 2**64 and lets absurd shapes in
    if raw is not None:
        if tensor.HasField("contents") and tensor.contents.ByteSize():
            raise InvalidInput(
                f"input {name!r}: both contents and raw_input_contents are set; send one"
            )
        data = from_binary(name, datatype, dtype, memoryview(raw), count)
    else:
        data = _from_contents(name, datatype, dtype, tensor.contents, count)
    try:
        data = data.reshape(shape)
    except ValueError:  # no elements, but a dimension numpy cannot represent
        raise InvalidInput(f"input {name!r}: shape {shape} is too large") from None
    return Tensor(name, datatype, tuple(shape), data, parameters_of(tensor.parameters))


def _from_contents(
    name: str, datatype: str, dtype: np.dtype[Any], contents: pb.InferTensorContents, count: int
) -> np.ndarray:
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} tensors travel in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        others = [f for f in _filled(contents) if f != field]
        hint = f" ({datatype} goes in {field}, not {', '.join(others)})" if others else ""
        raise InvalidInput(
            f"input {name!r}: shape needs {count} elements, got {len(values)} in {field}{hint}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array
    if datatype in NARROW_INTEGERS and count:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value is out of range for {datatype}")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def _filled(contents: pb.InferTensorContents) -> list[str]:
    """The typed fields a request filled, for an error message."""
    return [field.name for field, _value in contents.ListFields()]


def encode_infer_response(
    model_name: str, model_version: str, outputs: list[tuple[str, np.ndarray]], *, raw: bool
) -> pb.ModelInferResponse:
    """The response for ``outputs`` (name, tensor); their data in ``raw_output_contents`` when
    ``raw``, in each output's typed contents otherwise. The request id is set by the caller."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version)
    for name, values in outputs:
        # No typed field holds FP16: typed answers send it as FP32.
        array = values.astype(np.float32) if not raw and values.dtype == np.float16 else values
        datatype = datatype_of(array)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(to_binary(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELDS[datatype]).extend(array.reshape(-1).tolist())
    return response
