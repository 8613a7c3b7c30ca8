"""Triton's binary tensor extension of the Open Inference Protocol, from the client's side: a
request whose tensors follow its JSON header as raw bytes, and a response read the same way.

Numbers travel as little-endian bytes; each BYTES element as a 4-byte little-endian length and
its bytes. The ``inference-header-content-length`` header gives the JSON part's length.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserve.errors import MlserveError

HEADER_LENGTH = "inference-header-content-length"

NUMBER_TYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""Every numeric datatype of the protocol and its numpy dtype (BYTES is the other one)."""


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One input: a 1-D FP64 array, or BYTES elements."""

    name: str
    datatype: str
    data: np.ndarray | list[bytes]

    def raw(self) -> bytes:
        """The tensor's binary data."""
        if isinstance(self.data, list):
            return b"".join(struct.pack("<I", len(item)) + item for item in self.data)
        return np.ascontiguousarray(self.data, dtype=NUMBER_TYPES[self.datatype]).tobytes()


def encode_request(
    inputs: Sequence[InputTensor], outputs: Sequence[str]
) -> tuple[bytes, dict[str, str]]:
    """A request body with every input as binary data and every output asked for as binary,
    and the headers it needs."""
    chunks = [tensor.raw() for tensor in inputs]
    header = {
        "inputs": [
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": [len(tensor.data)],
                "parameters": {"binary_data_size": len(chunk)},
            }
            for tensor, chunk in zip(inputs, chunks, strict=True)
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    head = json.dumps(header).encode()
    headers = {HEADER_LENGTH: str(len(head)), "content-type": "application/octet-stream"}
    return head + b"".join(chunks), headers


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """Each output of a response (JSON, or JSON and binary data) as a numpy array of its shape;
    BYTES elements as text. Raises MlserveError when the body does not hold what it says."""
    length = int(header_length) if header_length is not None else len(body)
    try:
        document = json.loads(body[:length])
        offset = length
        outputs: dict[str, np.ndarray] = {}
        for output in document["outputs"]:
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is None:
                array = _from_json(output["data"], output["datatype"])
            else:
                array = _from_binary(body[offset : offset + size], output["datatype"])
                offset += size
            outputs[output["name"]] = array.reshape(output["shape"])
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise MlserveError(
            f"the server's answer is not a valid inference response: {exc}"
        ) from None
    if offset != len(body):
        raise MlserveError("the server's answer holds binary data no output claims")
    return outputs


def _from_json(data: Any, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.asarray(data, dtype=object)
    return np.asarray(data, dtype=NUMBER_TYPES[datatype])


def _from_binary(raw: bytes, datatype: str) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=NUMBER_TYPES[datatype])
    items: list[str] = []
    offset = 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise ValueError("a BYTES element runs past the data")
        items.append(raw[offset : offset + size].decode("utf-8", errors="replace"))
        offset += size
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
