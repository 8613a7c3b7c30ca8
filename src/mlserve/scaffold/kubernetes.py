"""Kubernetes and KServe manifests for `mlserve init` and `mlserve k8s`: plain YAML for `kubectl
apply -f`, built here as data so every file agrees on names, labels, the port and the paths.

The server's facts the manifests depend on are stated once, below: the health paths and the
metrics path (a test reads them back from the app's routes), the settings given through the
ConfigMap (a test checks each name against `Settings`), and the user the image runs as (the
Dockerfile's `USER`). Optional objects that need an operator (Prometheus operator, KEDA) and
the KServe ones live in their own folders, so `kubectl apply -f deploy/kubernetes/` works on a
bare cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlserve.errors import Conflict, InvalidInput
from mlserve.runtimes import RUNTIMES

READY_PATH = "/v2/health/ready"
"""Readiness: false while the first load runs and from the moment SIGTERM arrives."""
LIVE_PATH = "/v2/health/live"
"""Liveness: the process answers."""
METRICS_PATH = "/metrics"
"""Prometheus exposition."""
CONTAINER_PORT = 8080
"""The port the container listens on (settings `port`; KServe's default too)."""
GRPC_PORT = 8081
"""The Open Inference Protocol's gRPC port (settings `grpc_port`)."""
RUN_AS_UID = 10001
"""The image's non-root user and group (the Dockerfile's `USER`)."""
HOME_DIR = "/var/lib/mlserve"
"""Writable: the settings `home` (prediction log, artifact cache); an emptyDir in a pod."""
MODEL_DIR = "/opt/mlserve/models"
"""Where `mlserve build` bakes version folders into an image."""
KSERVE_MODEL_DIR = "/mnt/models"
"""Where KServe's storage initializer puts a model."""
PRESTOP_SLEEP_S = 5
"""Seconds a terminating pod keeps serving before SIGTERM, so endpoints and load balancers
stop sending it traffic first (the server closes its listener at SIGTERM)."""
SECRET_KEYS = {
    "MLSERVE_API_KEY": "api-key",
    "MLSERVE_ADMIN_API_KEY": "admin-api-key",
    "MLSERVE_DATABASE_URL": "database-url",
}
"""Secret settings -> their key in the Secret; never written into a manifest."""

KUBERNETES_FILES = (
    "deploy/kubernetes/configmap.yaml",
    "deploy/kubernetes/deployment.yaml",
    "deploy/kubernetes/service.yaml",
    "deploy/kubernetes/hpa.yaml",
    "deploy/kubernetes/pdb.yaml",
    "deploy/kubernetes/networkpolicy.yaml",
    "deploy/kubernetes/prometheus-operator/podmonitor.yaml",
    "deploy/kubernetes/keda/scaledobject.yaml",
    "deploy/kserve/clusterservingruntime.yaml",
    "deploy/kserve/inferenceservice.yaml",
)
"""Every file `write_manifests` writes, relative to the project folder."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """What the manifests deploy.

    ``refs`` empty: the image serves what it holds (`mlserve build` bakes versions in), so the
    database URL in the Secret is optional. ``refs`` given: the pods serve those references from
    the registry the Secret's `database-url` names (with ``artifact_root`` for its files).
    """

    name: str = "mlserve"
    image: str = "mlserve:latest"
    refs: tuple[str, ...] = ()
    replicas: int = 2
    max_replicas: int = 10
    drain_timeout_s: float = 30.0
    artifact_root: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInput(
                f"name {self.name!r} is not a Kubernetes name: lower-case letters, digits and "
                "'-', at most 40 characters, starting and ending with a letter or digit"
            )
        if not 1 <= self.replicas <= self.max_replicas:
            raise InvalidInput(f"replicas must be between 1 and {self.max_replicas}")


def termination_grace_s(spec: DeploySpec) -> int:
    """Seconds Kubernetes waits before SIGKILL: the preStop pause, the drain, then a margin."""
    return PRESTOP_SLEEP_S + math.ceil(spec.drain_timeout_s) + 10


def config_values(spec: DeploySpec) -> dict[str, str]:
    """The settings the ConfigMap gives every pod, as MLSERVE_* variables."""
    values = {
        "MLSERVE_HOST": "0.0.0.0",
        "MLSERVE_PORT": str(CONTAINER_PORT),
        "MLSERVE_GRPC_PORT": str(GRPC_PORT),
        "MLSERVE_HOME": HOME_DIR,
        "MLSERVE_LOG_FORMAT": "json",
        "MLSERVE_DRAIN_TIMEOUT_S": _number(spec.drain_timeout_s),
        # One process per pod: Kubernetes scales pods, and per-pod metrics stay simple.
        "MLSERVE_WORKERS": "1",
    }
    if spec.artifact_root:
        values["MLSERVE_ARTIFACT_ROOT"] = spec.artifact_root
    return values


def kubernetes_manifests(spec: DeploySpec) -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects in it, for every file in KUBERNETES_FILES."""
    return {
        "deploy/kubernetes/configmap.yaml": [_config_map(spec)],
        "deploy/kubernetes/deployment.yaml": [_deployment(spec)],
        "deploy/kubernetes/service.yaml": [_service(spec)],
        "deploy/kubernetes/hpa.yaml": [_hpa(spec)],
        "deploy/kubernetes/pdb.yaml": [_pdb(spec)],
        "deploy/kubernetes/networkpolicy.yaml": [_network_policy(spec)],
        "deploy/kubernetes/prometheus-operator/podmonitor.yaml": [_pod_monitor(spec)],
        "deploy/kubernetes/keda/scaledobject.yaml": [_scaled_object(spec)],
        "deploy/kserve/clusterservingruntime.yaml": [_serving_runtime(spec)],
        "deploy/kserve/inferenceservice.yaml": [_inference_service(spec)],
    }


def render(objects: list[dict[str, Any]], header: str) -> str:
    """YAML documents under a comment header, in the key order they were built in."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)
    return comment + body


def manifest_files(spec: DeploySpec) -> dict[str, str]:
    """File name (relative to the project folder) -> its YAML text."""
    return {
        name: render(objects, _HEADERS[name])
        for name, objects in kubernetes_manifests(spec).items()
    }


def write_manifests(folder: Path, spec: DeploySpec, *, force: bool = False) -> list[str]:
    """Write every manifest under ``folder``; returns the files written, relative to it.

    Raises Conflict when a file would be overwritten and ``force`` is false.
    """
    files = manifest_files(spec)
    existing = [name for name in files if (folder / name).exists()]
    if existing and not force:
        raise Conflict(f"{folder} already has {', '.join(existing)}; use --force to overwrite")
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


# -- the objects ----------------------------------------------------------------------------------


def _labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mlserve", "app.kubernetes.io/instance": spec.name}


def _metadata(spec: DeploySpec, suffix: str = "") -> dict[str, Any]:
    return {"name": spec.name + suffix, "labels": _labels(spec)}


def _config_map(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, "-config"),
        "data": config_values(spec),
    }


def _secret_env(spec: DeploySpec) -> list[dict[str, Any]]:
    env = []
    for variable, key in SECRET_KEYS.items():
        # Serving references needs the registry; an image with baked-in versions does not.
        required = variable == "MLSERVE_DATABASE_URL" and bool(spec.refs)
        ref = {"name": spec.name + "-secrets", "key": key, "optional": not required}
        env.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
    return env


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _http_get(path: str) -> dict[str, Any]:
    return {"path": path, "port": "http"}


def _container(spec: DeploySpec) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "mlserve", "image": spec.image}
    if spec.refs:
        container["args"] = ["serve", *spec.refs]
    container |= {
        "ports": [
            {"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": spec.name + "-config"}}],
        "env": _secret_env(spec),
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        # Loading and warming models can take a while: up to 5 minutes before liveness counts.
        "startupProbe": {
            "httpGet": _http_get(LIVE_PATH),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 150,
        },
        "readinessProbe": {
            "httpGet": _http_get(READY_PATH),
            "periodSeconds": 2,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": _http_get(LIVE_PATH),
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "home", "mountPath": HOME_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return container


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _writable_volumes() -> list[dict[str, Any]]:
    return [
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]


def _deployment(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _labels(spec)},
            # Never below the wanted count during a rollout: a new pod is ready before an old goes.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": termination_grace_s(spec),
                    "securityContext": _pod_security(),
                    "containers": [_container(spec)],
                    "volumes": _writable_volumes(),
                },
            },
        },
    }


def _service(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {
            "selector": _labels(spec),
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def _hpa(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _pdb(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(spec)}},
    }


def _network_policy(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec),
        "spec": {
            "podSelector": {"matchLabels": _labels(spec)},
            "policyTypes": ["Ingress"],
            # Only the server's ports, from pods in any namespace (clients, Prometheus, the
            # ingress controller); narrow namespaceSelector to those you run.
            "ingress": [
                {
                    "from": [{"namespaceSelector": {}}],
                    "ports": [
                        {"protocol": "TCP", "port": CONTAINER_PORT},
                        {"protocol": "TCP", "port": GRPC_PORT},
                    ],
                }
            ],
        },
    }


def _pod_monitor(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(spec),
        "spec": {
            "selector": {"matchLabels": _labels(spec)},
            "podMetricsEndpoints": [{"port": "http", "path": METRICS_PATH, "interval": "15s"}],
        },
    }


def _scaled_object(spec: DeploySpec) -> dict[str, Any]:
    query = f'sum(mlserve_requests_in_flight{{namespace="default", pod=~"{spec.name}-.*"}})'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(spec),
        "spec": {
            "scaleTargetRef": {"name": spec.name},
            "minReplicaCount": spec.replicas,
            "maxReplicaCount": spec.max_replicas,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
                        "query": query,
                        "threshold": "8",
                    },
                }
            ],
        },
    }


def model_formats() -> list[str]:
    """The model formats mlserve serves: its runtimes' framework names."""
    return sorted(RUNTIMES)


def _serving_runtime(spec: DeploySpec) -> dict[str, Any]:
    container = {
        "name": "kserve-container",
        "image": spec.image,
        "args": ["serve", f"--model-dir={KSERVE_MODEL_DIR}"],
        "env": [{"name": name, "value": value} for name, value in config_values(spec).items()],
        "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "readinessProbe": {"httpGet": {"path": READY_PATH, "port": CONTAINER_PORT}},
        "securityContext": _container_security() | {"runAsUser": RUN_AS_UID},
        "volumeMounts": [
            {"name": "home", "mountPath": HOME_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(CONTAINER_PORT),
                "prometheus.kserve.io/path": METRICS_PATH,
            },
            # Not auto-selected: a plain model.joblib without mlserve.json is KServe's own
            # sklearn runtime's; an InferenceService picks mlserve by `runtime:`.
            "supportedModelFormats": [
                {"name": name, "version": "1", "autoSelect": False} for name in model_formats()
            ],
            "protocolVersions": ["v2"],
            "containers": [container],
            "volumes": _writable_volumes(),
        },
    }


def _inference_service(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": f"{spec.name}-example", "labels": _labels(spec)},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": model_formats()[0]},
                    "runtime": spec.name,
                    "protocolVersion": "v2",
                    "storageUri": "s3://YOUR-BUCKET/models/cancer/1",
                }
            }
        },
    }


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


_HEADERS = {
    "deploy/kubernetes/configmap.yaml": (
        "Settings every mlserve pod reads (MLSERVE_* variables; see .env.example).\n"
        "Secrets go in a Secret instead, never here:\n"
        "  kubectl create secret generic NAME-secrets --from-literal=api-key=... \\\n"
        "    --from-literal=admin-api-key=... --from-literal=database-url=..."
    ),
    "deploy/kubernetes/deployment.yaml": (
        "The mlserve server. Probes use /v2/health/ready and /v2/health/live; on SIGTERM the\n"
        "server turns unready, drains in-flight requests (MLSERVE_DRAIN_TIMEOUT_S) and exits 0,\n"
        "inside terminationGracePeriodSeconds."
    ),
    "deploy/kubernetes/service.yaml": "Port 80 in the cluster -> the server's port.",
    "deploy/kubernetes/hpa.yaml": (
        "Scales on CPU. Using KEDA (keda/scaledobject.yaml) instead? Delete this one: both\n"
        "would steer the same Deployment."
    ),
    "deploy/kubernetes/pdb.yaml": "Voluntary disruptions (node drains) take one pod at a time.",
    "deploy/kubernetes/networkpolicy.yaml": "Ingress to the server's port only.",
    "deploy/kubernetes/prometheus-operator/podmonitor.yaml": (
        "Needs the Prometheus operator: scrapes /metrics of every pod."
    ),
    "deploy/kubernetes/keda/scaledobject.yaml": (
        "Example, needs KEDA and Prometheus: scales on requests in flight per pod, from\n"
        "mlserve_requests_in_flight. Replaces hpa.yaml (delete that one first); set the\n"
        "namespace in the query and the Prometheus address."
    ),
    "deploy/kserve/clusterservingruntime.yaml": (
        "mlserve as a KServe serving runtime (Open Inference Protocol v2). The model folder\n"
        "KServe mounts at /mnt/models must be an mlserve version folder (mlserve.json and the\n"
        "model file), as `mlserve build` and the registry write them."
    ),
    "deploy/kserve/inferenceservice.yaml": (
        "Example: serve one version folder with the mlserve runtime. Set storageUri."
    ),
}
