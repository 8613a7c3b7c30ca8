"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) and the standard
``grpc.health.v1`` health service, on a port of their own beside REST."""

from mlserve.serving.grpc.calls import CallConfig
from mlserve.serving.grpc.server import GrpcConfig, GrpcServer, check_grpc_port

__all__ = ["CallConfig", "GrpcConfig", "GrpcServer", "check_grpc_port"]
