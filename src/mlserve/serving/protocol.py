"""Open Inference Protocol v2 codec: JSON and Triton's binary tensor extension, to and from numpy.

Tensors are validated once here (names, shapes, datatypes, lengths) and carried as numpy
arrays from then on; nothing downstream re-validates them.
"""

from __future__ import annotations

import contextlib
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlserve.errors import InvalidInput
from mlserve.inputs import as_float64, loads_json

HEADER_LENGTH = "inference-header-content-length"
"""Request/response header giving the JSON part's length when binary tensors follow it."""

NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""Every datatype of the protocol and the numpy dtype its elements decode to."""


@dataclass(slots=True)
class Tensor:
    """A decoded input or output tensor; ``data`` already has ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: which output, and whether to send it as binary."""

    name: str
    binary: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request."""

    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_output(self) -> bool:
        """Request-level ``binary_data_output``: the default for outputs that don't say."""
        return bool(self.parameters.get("binary_data_output", False))


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse a JSON (or JSON + binary) inference request; raises InvalidInput naming the fault."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    payload = parse_json(header)
    if not isinstance(payload, dict):
        raise InvalidInput("the request body must be a JSON object")
    booleans = may_hold_booleans(header)
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    offset = 0
    inputs = []
    for index, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, index, binary[offset:], booleans)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data no input claims"
        )
    outputs = [_decode_output(raw, i) for i, raw in enumerate(_list(payload, "outputs"))]
    request_id = payload.get("id")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=None if request_id is None else str(request_id),
        parameters=parameters,
    )


def parse_json(body: bytes | memoryview) -> Any:
    """JSON with a client-facing error; ``NaN`` and ``Infinity`` tokens are read as numbers
    (``mlserve.inputs.loads_json``)."""
    try:
        return loads_json(body)
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


def may_hold_booleans(body: bytes | memoryview) -> bool:
    """False when the JSON text has no ``true`` or ``false`` anywhere: its lists of numbers then
    hold no booleans (numpy would read true as 1.0 without a word)."""
    raw = bytes(body) if isinstance(body, memoryview) else body
    return b"true" in raw or b"false" in raw


def _list(payload: dict[str, Any], key: str) -> list[Any]:
    value = payload.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"'{key}' must be a list")
    return value


def _decode_output(raw: Any, index: int) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise InvalidInput(f"outputs[{index}] must be an object with a 'name'")
    parameters = raw.get("parameters") or {}
    binary = parameters.get("binary_data") if isinstance(parameters, dict) else None
    return RequestedOutput(raw["name"], None if binary is None else bool(binary), parameters)


def _decode_input(raw: Any, index: int, binary: memoryview, booleans: bool) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of binary data it consumed."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    datatype = raw.get("datatype")
    dtype = NUMPY_TYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(NUMPY_TYPES)}"
        )
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)  # exact: np.prod wraps around at 2**64 and lets absurd shapes in
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"input {name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} exceeds the {len(binary)} bytes sent"
            )
        data = from_binary(name, datatype, dtype, binary[:size], count)  # type: ignore[arg-type]  # datatype checked above
        used = size
    else:
        if "data" not in raw:
            raise InvalidInput(f"input {name!r} has no 'data' and no binary_data_size")
        if booleans and datatype not in ("BOOL", "BYTES") and _holds_booleans(raw["data"]):
            raise InvalidInput(f"input {name!r}: {datatype} data must be numbers, not true/false")
        data = _from_json(name, datatype, dtype, raw["data"], count)  # type: ignore[arg-type]  # datatype checked above
        used = 0
    try:
        data = data.reshape(shape)
    except ValueError:  # no elements, but a dimension numpy cannot represent
        raise InvalidInput(f"input {name!r}: shape {shape} is too large") from None
    return Tensor(name, datatype, tuple(shape), data, parameters), used  # type: ignore[arg-type]  # datatype checked above


def _holds_booleans(data: Any) -> bool:
    """True when nested JSON ``data`` holds a true or false."""
    if isinstance(data, bool):
        return True
    if isinstance(data, list):
        return any(_holds_booleans(item) for item in data)
    return False


def from_binary(
    name: str, datatype: str, dtype: np.dtype[Any], raw: memoryview, count: int
) -> np.ndarray:
    """The ``count`` elements of input ``name`` from raw little-endian bytes (BYTES elements
    each after its 4-byte length), flat; raises InvalidInput when the bytes do not hold them.
    Numbers are a view of ``raw``, not a copy."""
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidInput(f"input {name!r}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise InvalidInput(f"input {name!r}: BYTES element longer than the data sent")
            items.append(bytes(raw[offset : offset + length]))
            offset += length
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: {len(raw)} bytes of binary data do not hold "
                f"{count} {datatype} elements ({count * dtype.itemsize} bytes)"
            )
        array = np.frombuffer(raw, dtype=dtype)  # no copy: a view of the request body
    if array.size != count:
        raise InvalidInput(f"input {name!r}: shape needs {count} elements, got {array.size}")
    return array


def _from_json(name: str, datatype: str, dtype: np.dtype[Any], data: Any, count: int) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        # Nested lists of unequal lengths raise; nulls among numbers give an object array of
        # the nesting's shape, which _cast reads like flat data.
        raw = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: nested 'data' is ragged") from None
    if raw.dtype.kind == "U":
        # numpy's fixed-width strings drop trailing NUL characters ("\x00" would read as "",
        # a missing value): keep the JSON strings themselves, in the shape numpy found.
        raw = np.array(data, dtype=object).reshape(raw.shape)
    raw = raw.reshape(-1)
    if raw.size != count:
        raise InvalidInput(f"input {name!r}: shape needs {count} elements, got {raw.size}")
    if (
        datatype == "UINT64"
        and raw.dtype.kind == "f"
        and raw.size
        and raw.min() >= 0
        and np.all(raw == np.floor(raw))
    ):
        # Integers past 2**63 beside smaller ones parse as float64 and lose their last digits
        # (2**64 - 1024 even overflows the cast): read whole numbers again straight as uint64.
        try:
            return np.asarray(data, dtype=dtype).reshape(-1)
        except OverflowError:
            raise InvalidInput(f"input {name!r}: a value is out of range for UINT64") from None
    return _cast(name, datatype, dtype, raw)


def _cast(name: str, datatype: str, dtype: np.dtype[Any], raw: np.ndarray) -> np.ndarray:
    kind = raw.dtype.kind
    if datatype == "BYTES":
        if kind in "USO" or raw.size == 0:  # [] parses as float64
            return raw.astype(object)
        raise InvalidInput(f"input {name!r}: BYTES data must be strings")
    if datatype == "BOOL":
        if kind == "b" or raw.size == 0:
            return raw.astype(np.bool_)
        raise InvalidInput(f"input {name!r}: BOOL data must be true or false")
    if kind == "O" and dtype.kind == "f":  # nulls among numbers: NaN
        try:
            return raw.astype(dtype)
        except OverflowError:  # an integer past float64: infinite, as its text reads
            with contextlib.suppress(TypeError, ValueError):  # not numbers: refused below
                return np.array([as_float64(value) for value in raw], dtype=dtype)
        except (TypeError, ValueError):
            pass
    if kind not in "biuf" and raw.size:
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers")
    if dtype.kind in "iu" and raw.size:
        if kind == "f" and not np.all(np.isfinite(raw) & (raw == np.floor(raw))):
            raise InvalidInput(f"input {name!r}: {datatype} data must be whole numbers")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value is out of range for {datatype}")
    return raw.astype(dtype)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype for a numpy array (BYTES for strings and objects)."""
    datatype = _DATATYPES.get(array.dtype)
    if datatype is None:
        datatype = _datatype_of_dtype(array.dtype)
        _DATATYPES[array.dtype] = datatype
    return datatype


_DATATYPES: dict[np.dtype[Any], str] = {}
"""datatype_of's answers by dtype: a handful of dtypes, looked up on every response."""


def _datatype_of_dtype(dtype: np.dtype[Any]) -> str:
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        for name, candidate in NUMPY_TYPES.items():
            if name != "BYTES" and candidate == dtype.newbyteorder("<"):
                return name
        return "FP64"
    return "BYTES"


@dataclass(slots=True)
class Response:
    """An encoded response: body bytes plus the headers the binary extension needs."""

    body: bytes
    headers: dict[str, str]
    media_type: str


def encode_response(
    model_name: str,
    model_version: str,
    outputs: list[tuple[str, np.ndarray]],
    binary: list[bool],
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Response:
    """Build the response body; outputs flagged in ``binary`` go after the JSON as raw bytes."""
    encoded: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for (name, array), as_binary in zip(outputs, binary, strict=True):
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if as_binary:
            chunk = to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json_list(array, datatype)
        encoded.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = encoded
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, {}, "application/json")
    return Response(
        b"".join([header, *chunks]),
        {HEADER_LENGTH: str(len(header))},
        "application/octet-stream",
    )


def _to_json_list(array: np.ndarray, datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if datatype == "FP16":
        flat = flat.astype(np.float32)
    return flat  # orjson serializes numpy arrays natively


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """A tensor as raw little-endian bytes (BYTES elements each after its 4-byte length)."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in array.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)
