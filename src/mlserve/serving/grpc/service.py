"""The Open Inference Protocol's ``inference.GRPCInferenceService``, answered by the code REST
answers with: `state.admit` chooses and admits the version (rollouts, queue room), `oip.infer`
checks and predicts (batching, prediction log), the version's cache keeps encoded answers, and
`serving.repository` lists, loads and unloads models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from starlette.responses import Response

from mlserve.errors import InvalidInput, NotFound
from mlserve.serving import oip, repository
from mlserve.serving.cache import Answer, respond
from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.grpc.calls import Access, CallEdge, Handler
from mlserve.serving.grpc.codec import decode_infer_request, encode_infer_response, parameters_of
from mlserve.serving.grpc.stub import MESSAGES, SERVICE, path_of
from mlserve.serving.middleware import RequestInfo
from mlserve.serving.protocol import InferRequest
from mlserve.serving.served import ServedVersion
from mlserve.serving.state import ServerState, Wanted, admit, answer_routed, status_of

CACHE_QUALIFIERS = ("grpc",)
"""What keys a gRPC request in a version's cache besides its bytes (REST's keys differ)."""
LOAD_PARAMETERS = frozenset({"version"})
UNLOAD_PARAMETERS = frozenset({"version", "unload_dependents"})
"""What a load or unload may say: tritonclient always sends ``unload_dependents``, which means
nothing here (no model depends on another)."""


class InferenceService:
    """Every call of the service, each through the `CallEdge` (ids, keys, metrics, errors)."""

    def __init__(self, state: ServerState, edge: CallEdge) -> None:
        self._state = state
        self._edge = edge

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method table, for ``grpc.aio.Server.add_generic_rpc_handlers``."""
        answers: dict[str, tuple[Handler[Any], Access]] = {
            "ServerLive": (self.server_live, "health"),
            "ServerReady": (self.server_ready, "health"),
            "ModelReady": (self.model_ready, "inference"),
            "ServerMetadata": (self.server_metadata, "inference"),
            "ModelMetadata": (self.model_metadata, "inference"),
            "ModelInfer": (self.model_infer, "inference"),
            "RepositoryIndex": (self.repository_index, "admin"),
            "RepositoryModelLoad": (self.repository_load, "admin"),
            "RepositoryModelUnload": (self.repository_unload, "admin"),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                method: grpc.unary_unary_rpc_method_handler(
                    self._guarded(method, answer, access),
                    request_deserializer=MESSAGES[method][0].FromString,
                    response_serializer=_serialize,
                )
                for method, (answer, access) in answers.items()
            },
        )

    def _guarded(self, method: str, answer: Handler[Any], access: Access) -> Any:
        """``answer`` run as a call of ``method`` (through the edge)."""
        path = path_of(method)
        edge = self._edge

        async def call(request: Any, context: Any) -> Any:
            request_id = request.id if isinstance(request, pb.ModelInferRequest) else ""
            return await edge.run(context, path, access, answer, request, request_id)

        return call

    # -- health and metadata ---------------------------------------------------------------------

    async def server_live(self, _request: Any, *_: Any) -> pb.ServerLiveResponse:
        """True while the process answers at all."""
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, _request: Any, *_: Any) -> pb.ServerReadyResponse:
        """True when every configured model is loaded and warmed (false while draining)."""
        return pb.ServerReadyResponse(ready=self._state.is_ready)

    async def model_ready(self, request: pb.ModelReadyRequest, *_: Any) -> pb.ModelReadyResponse:
        """Whether a model version is ready; NOT_FOUND for what this server does not serve."""
        status, _served = await status_of(self._state.models, request.name, request.version or None)
        return pb.ModelReadyResponse(ready=status.is_ready)

    async def server_metadata(self, _request: Any, *_: Any) -> pb.ServerMetadataResponse:
        """Name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=oip.SERVER_NAME, version=oip.SERVER_VERSION, extensions=oip.EXTENSIONS
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, *_: Any
    ) -> pb.ModelMetadataResponse:
        """Inputs, outputs, versions and platform of a model (REST's metadata without its
        parameters, which the protocol's message has no field for)."""
        models = self._state.models
        status, served = await status_of(models, request.name, request.version or None)
        meta = oip.model_metadata(models, status, served)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["inputs"]
            ],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["outputs"]
            ],
        )

    # -- inference -------------------------------------------------------------------------------

    async def model_infer(
        self, request: pb.ModelInferRequest, info: RequestInfo, metadata: Mapping[str, str]
    ) -> pb.ModelInferResponse:
        """Predict: admitted before its tensors are decoded, as REST admits before reading."""
        if not request.model_name:
            raise InvalidInput("'model_name' is required")
        wanted = Wanted(request.model_name, request.model_version or None, metadata)
        served = await admit(self._state, info, wanted, request.ByteSize())
        decoded = decode_infer_request(request)
        raw = bool(request.raw_input_contents)

        async def run(chosen: ServedVersion, route: str) -> pb.ModelInferResponse:
            if chosen.cache is None:
                return await _infer(chosen, decoded, route, raw=raw)
            response = await respond(
                chosen.cache,
                _cache_body(request),
                CACHE_QUALIFIERS,
                lambda: _infer_encoded(chosen, decoded, route, raw=raw),
            )
            return pb.ModelInferResponse.FromString(bytes(response.body))

        answer = await answer_routed(info, served, run)
        answer.id = info.request_id
        return answer

    # -- model repository ------------------------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, *_: Any
    ) -> pb.RepositoryIndexResponse:
        """Every version served, loading, failed or unloaded (only ready ones with ``ready``)."""
        _one_repository(request.repository_name)
        rows = repository.index(self._state.models, ready_only=request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=r.name, version=r.version, state=r.state, reason=r.reason) for r in rows
            ]
        )

    async def repository_load(
        self, request: pb.RepositoryModelLoadRequest, *_: Any
    ) -> pb.RepositoryModelLoadResponse:
        """Serve a registered model, or one more version of it (parameter ``version``)."""
        _one_repository(request.repository_name)
        version = _version_parameter(request.parameters, LOAD_PARAMETERS)
        await repository.load(self._state.models, request.model_name, version)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, *_: Any
    ) -> pb.RepositoryModelUnloadResponse:
        """Stop serving a model, or one version of it (parameter ``version``)."""
        _one_repository(request.repository_name)
        version = _version_parameter(request.parameters, UNLOAD_PARAMETERS)
        await repository.unload(self._state.models, request.model_name, version)
        return pb.RepositoryModelUnloadResponse()


async def _infer(
    served: ServedVersion, request: InferRequest, route: str, *, raw: bool
) -> pb.ModelInferResponse:
    inferred = await oip.infer(served, request, route)
    return encode_infer_response(served.name, served.version, inferred.outputs, raw=raw)


async def _infer_encoded(
    served: ServedVersion, request: InferRequest, route: str, *, raw: bool
) -> Answer:
    """What the cache keeps: the encoded answer (without the request id, set per request) and
    the prediction-log item, so a hit is logged like the prediction it replays."""
    inferred = await oip.infer(served, request, route)
    message = encode_infer_response(served.name, served.version, inferred.outputs, raw=raw)
    body = message.SerializeToString()
    return Response(body, media_type="application/grpc+proto"), inferred.logged


def _cache_body(request: pb.ModelInferRequest) -> bytes:
    """The request's bytes as a cache key, without its id: the same tensors get one answer."""
    if not request.id:
        return request.SerializeToString(deterministic=True)
    anonymous = pb.ModelInferRequest()
    anonymous.CopyFrom(request)
    anonymous.ClearField("id")
    return anonymous.SerializeToString(deterministic=True)


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _one_repository(name: str) -> None:
    if name:
        raise NotFound(f"no repository named {name!r}: this server has one; leave the name empty")


def _version_parameter(parameters: Mapping[str, Any], allowed: frozenset[str]) -> str | None:
    plain = parameters_of(parameters)
    unknown = sorted(set(plain) - allowed)
    if unknown:
        raise InvalidInput(
            f"unsupported parameters {', '.join(unknown)}: models load from the registry; "
            "only 'version' may be given"
        )
    return repository.checked_version(plain.get("version"))
