"""The Kubernetes and KServe manifests: valid for the supported Kubernetes versions (strict
schemas, so a misspelt field fails), KServe objects made only of the fields the `kserve`
package's models know, and in agreement with what the server really serves."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kserve.models
import kubernetes.client.models
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_schemas

from mlserve.runtimes import RUNTIMES
from mlserve.scaffold.kubernetes import (
    CONTAINER_PORT,
    KSERVE_MODEL_DIR,
    KUBERNETES_FILES,
    LIVE_PATH,
    PRESTOP_SLEEP_S,
    READY_PATH,
    DeploySpec,
    config_values,
    manifest_files,
)
from mlserve.serving import create_app
from mlserve.settings import Settings

SUPPORTED_VERSIONS = kubernetes_schemas.all_versions()[-3:]
"""Kubernetes supports its three newest minor releases; these are the newest three the
installed kubernetes-validate has schemas for."""
OPERATOR_KINDS = {"PodMonitor", "ScaledObject", "ClusterServingRuntime", "InferenceService"}
"""Custom resources (Prometheus operator, KEDA, KServe): no schema in kubernetes-validate."""

SPECS = [
    DeploySpec(),
    DeploySpec(name="churn", image="registry.example.com/churn:3", refs=("churn@production",)),
    DeploySpec(refs=("churn", "fraud:2"), drain_timeout_s=12.5, artifact_root="s3://models"),
]


def objects(spec: DeploySpec) -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects it holds, read back from the YAML text `init` writes."""
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in manifest_files(spec).items()
    }


def one(spec: DeploySpec, kind: str) -> dict[str, Any]:
    """The single object of ``kind``."""
    found = [obj for docs in objects(spec).values() for obj in docs if obj["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_every_file_is_written_once_with_a_comment_header() -> None:
    files = manifest_files(DeploySpec())
    assert tuple(files) == KUBERNETES_FILES
    for name, text in files.items():
        assert text.startswith("# "), name


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_core_objects_pass_strict_validation(spec: DeploySpec, version: str) -> None:
    unvalidated = set()
    for docs in objects(spec).values():
        for obj in docs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unvalidated.add(obj["kind"])
    assert unvalidated == OPERATOR_KINDS


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = one(DeploySpec(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SUPPORTED_VERSIONS[-1], strict=True)


def _model_class(type_name: str) -> type | None:
    for module in (kserve.models, kubernetes.client.models):
        found = getattr(module, type_name, None)
        if found is not None:
            return found  # type: ignore[no-any-return]  # generated model classes
    return None


def unknown_fields(value: Any, type_name: str, where: str = "") -> list[str]:
    """Paths of the keys in ``value`` that the generated model ``type_name`` (kserve's or
    kubernetes') does not declare, following the models' own type strings."""
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        return [
            bad
            for i, item in enumerate(value)
            for bad in unknown_fields(item, match[1], f"{where}[{i}]")
        ]
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        return [
            bad for k, v in value.items() for bad in unknown_fields(v, match[1], f"{where}.{k}")
        ]
    model = _model_class(type_name)
    if model is None:  # str, int, bool, object: a leaf
        return []
    assert isinstance(value, dict), f"{where} should be an object ({type_name})"
    by_json_name = {json: attr for attr, json in model.attribute_map.items()}
    bad = [f"{where}.{key}" for key in value if key not in by_json_name]
    for key, item in value.items():
        if key in by_json_name:
            field_type = model.openapi_types[by_json_name[key]]
            bad += unknown_fields(item, field_type, f"{where}.{key}")
    return bad


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("ClusterServingRuntime", "V1alpha1ClusterServingRuntime"),
        ("InferenceService", "V1beta1InferenceService"),
    ],
)
def test_kserve_objects_use_only_fields_the_kserve_models_know(kind: str, model: str) -> None:
    obj = one(DeploySpec(), kind)
    assert unknown_fields(obj, model) == []
    misspelt = {**obj, "spec": {**obj["spec"], "protocolVersion": ["v2"]}}
    assert unknown_fields(misspelt, model) == [".spec.protocolVersion"]


def test_serving_runtime_container_is_a_valid_kubernetes_container() -> None:
    runtime = one(DeploySpec(), "ClusterServingRuntime")["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kserve-check"},
        "spec": {"containers": runtime["containers"], "volumes": runtime["volumes"]},
    }
    for version in SUPPORTED_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_serving_runtime_is_what_kserve_expects() -> None:
    spec = one(DeploySpec(), "ClusterServingRuntime")["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"] == ["serve", f"--model-dir={KSERVE_MODEL_DIR}"]
    assert spec["protocolVersions"] == ["v2"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == sorted(RUNTIMES)
    service = one(DeploySpec(), "InferenceService")["spec"]["predictor"]["model"]
    assert service["runtime"] == one(DeploySpec(), "ClusterServingRuntime")["metadata"]["name"]
    assert service["modelFormat"]["name"] in RUNTIMES


# -- agreement with the server --------------------------------------------------------------------


def _http_paths(value: Any) -> set[str]:
    """Every httpGet or metrics path anywhere in a manifest."""
    if isinstance(value, list):
        return {path for item in value for path in _http_paths(item)}
    if not isinstance(value, dict):
        return set()
    own = {value["path"]} if "path" in value and ("port" in value or "interval" in value) else set()
    return own | {path for item in value.values() for path in _http_paths(item)}


@pytest.fixture(scope="module")
def served_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The paths the manifests name that the server's app answers (not 404), asked of the app
    itself as `mlserve serve` builds it; its first load has not run, so it is not ready."""
    home = tmp_path_factory.mktemp("home")
    app = create_app(Settings(home=home, prediction_log=False, drift_interval_s=0), [])
    wanted = {
        path for spec in SPECS for docs in objects(spec).values() for path in _http_paths(docs)
    }
    wanted.add("/v2/health/nope")  # a path the server does not serve, to show the check bites

    async def statuses() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            return {path: (await client.get(path)).status_code for path in sorted(wanted)}

    answers = asyncio.run(statuses())
    assert answers[LIVE_PATH] == 200
    assert answers[READY_PATH] == 503  # the readiness probe holds traffic until models load
    assert answers["/v2/health/nope"] == 404
    return {path for path, status in answers.items() if status != 404}


def _env_names(container: dict[str, Any], spec: DeploySpec) -> set[str]:
    return {e["name"] for e in container.get("env", [])} | set(config_values(spec))


CRD_SCHEMAS = Path(__file__).with_name("crd_schemas")
"""The openAPIV3Schema of the Prometheus operator's PodMonitor and KEDA's ScaledObject CRDs,
copied from their repositories (each file names its source and commit)."""


def crd_validator(file_name: str, api_version: str) -> jsonschema.Draft7Validator:
    """A strict validator of one CRD version: an object with declared properties takes no
    others (what `kubectl apply --validate=strict` does with a field the CRD does not know)."""
    document = json.loads((CRD_SCHEMAS / file_name).read_text(encoding="utf-8"))
    schema = document["versions"][api_version.rsplit("/", 1)[1]]
    return jsonschema.Draft7Validator(_strict(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        strict = {key: _strict(value) for key, value in node.items()}
        if (
            "properties" in strict
            and "additionalProperties" not in strict
            and not strict.get("x-kubernetes-preserve-unknown-fields")
        ):
            strict["additionalProperties"] = False
        return strict
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    ("kind", "file_name"),
    [("PodMonitor", "podmonitor.json"), ("ScaledObject", "scaledobject.json")],
)
def test_operator_objects_pass_their_crd_schema(
    spec: DeploySpec, kind: str, file_name: str
) -> None:
    obj = one(spec, kind)
    validator = crd_validator(file_name, obj["apiVersion"])
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
    assert errors == []
    misspelt = json.loads(json.dumps(obj))
    misspelt["spec"]["selectr"] = misspelt["spec"].pop("scaleTargetRef", None) or {}
    assert list(validator.iter_errors(misspelt))  # the check would catch a misspelt field


@pytest.mark.parametrize("spec", SPECS)
def test_probes_ports_and_settings_agree_with_the_server(
    spec: DeploySpec, served_paths: set[str]
) -> None:
    pod = one(spec, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings_names = {f"MLSERVE_{name.upper()}" for name in Settings.model_fields}

    probes = [container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    for probe in probes:
        assert probe["httpGet"]["path"] in served_paths
        assert ports[probe["httpGet"]["port"]] == CONTAINER_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    assert _env_names(container, spec) <= settings_names

    # The ConfigMap's values load as Settings: the port the server listens on is the pod's.
    config = one(spec, "ConfigMap")["data"]
    loaded = Settings(**{k.removeprefix("MLSERVE_").lower(): v for k, v in config.items()})
    assert loaded.port == CONTAINER_PORT
    assert loaded.grpc_port == ports["grpc"]  # the gRPC port the pod names is the one served
    assert loaded.host == "0.0.0.0"
    assert loaded.drain_timeout_s == spec.drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SLEEP_S + loaded.drain_timeout_s

    monitor = one(spec, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert monitor["path"] in served_paths
    assert ports[monitor["port"]] == CONTAINER_PORT
    http, grpc = one(spec, "Service")["spec"]["ports"]
    assert ports[http["targetPort"]] == CONTAINER_PORT
    assert ports[grpc["targetPort"]] == loaded.grpc_port
    allowed = {p["port"] for p in one(spec, "NetworkPolicy")["spec"]["ingress"][0]["ports"]}
    assert allowed == set(ports.values())

    runtime = one(spec, "ClusterServingRuntime")["spec"]["containers"][0]
    assert runtime["readinessProbe"]["httpGet"]["path"] in served_paths
    assert runtime["ports"][0]["containerPort"] == CONTAINER_PORT
    assert _env_names(runtime, spec) <= settings_names


@pytest.mark.parametrize("spec", SPECS)
def test_secrets_come_from_a_secret_and_the_pod_is_locked_down(spec: DeploySpec) -> None:
    pod = one(spec, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(secret_env) == {"MLSERVE_API_KEY", "MLSERVE_ADMIN_API_KEY", "MLSERVE_DATABASE_URL"}
    assert all(ref["name"] == f"{spec.name}-secrets" for ref in secret_env.values())
    # The registry is needed only when the pods serve references from it.
    assert secret_env["MLSERVE_DATABASE_URL"]["optional"] is not bool(spec.refs)
    text = "".join(manifest_files(spec).values()).lower()
    assert "database_url:" not in text
    assert "api_key:" not in text

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    assert writable == {config_values(spec)["MLSERVE_HOME"], "/tmp"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert container.get("args", []) == (["serve", *spec.refs] if spec.refs else [])


def test_autoscaling_and_disruption_objects_select_the_deployment_pods() -> None:
    spec = DeploySpec(name="churn")
    labels = one(spec, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "PodMonitor", "NetworkPolicy"):
        obj = one(spec, kind)["spec"]
        selector = obj.get("selector") or obj["podSelector"]
        assert selector["matchLabels"].items() <= labels.items()
    assert one(spec, "Service")["spec"]["selector"].items() <= labels.items()
    assert one(spec, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "churn"
    assert one(spec, "ScaledObject")["spec"]["scaleTargetRef"]["name"] == "churn"
    query = one(spec, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    assert "mlserve_requests_in_flight" in query


def test_names_that_kubernetes_refuses_are_refused() -> None:
    from mlserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not a Kubernetes name"):
        DeploySpec(name="Churn_Model")


def test_written_files_are_what_kubectl_reads(tmp_path: Path) -> None:
    from mlserve.scaffold import write_manifests

    written = write_manifests(tmp_path, DeploySpec())
    for name in written:
        docs = list(yaml.safe_load_all((tmp_path / name).read_text(encoding="utf-8")))
        assert all(isinstance(doc, dict) and doc["apiVersion"] for doc in docs)
