"""The service's wire names and messages, and a client stub over a grpcio channel (sync or
asyncio): the server registers these paths, and Python clients without tritonclient (the
tests, the benchmark) call them."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
"""The protocol's service name: the paths are /SERVICE/METHOD."""
MESSAGES: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}
"""Each method's request and response message."""


def path_of(method: str) -> str:
    """The wire path of a method."""
    return f"/{SERVICE}/{method}"


class InferenceStub:
    """Calls the service's methods on a channel: ``stub.call("ModelInfer")(request)``."""

    def __init__(self, channel: Any) -> None:
        self._callables = {
            method: channel.unary_unary(
                path_of(method),
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, (request, response) in MESSAGES.items()
        }

    def call(self, method: str) -> Any:
        """The channel's callable for ``method`` (a grpcio UnaryUnaryMultiCallable)."""
        return self._callables[method]
