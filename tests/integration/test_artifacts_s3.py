"""Artifacts on S3: moto's real S3 server on a loopback port, reached through s3fs as a user's
deployment reaches AWS, with nothing but the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …) and MLSERVE_ARTIFACT_ROOT=s3://bucket/prefix.

The server is moto's WSGI application served as ``ThreadedMotoServer`` serves it, with one
addition in front: a record of every request, so a test can count the downloads of a file.
Shown here: registering uploads; every load checks sha256, also of the node's cached copy;
a version is downloaded once per node (processes sharing the cache folder, two `mlserve serve`
processes included); a missing bucket or an unreachable store is one line naming it, from
`mlserve register` and from `mlserve serve` at start; and when the store goes away under a
running server, the version it serves keeps answering while the failure to load the next one
is reported.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pandas as pd
import pytest
import s3fs
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import MLSERVE, LiveServer, free_port, running_server, server_environment
from sklearn.pipeline import Pipeline
from werkzeug.serving import BaseWSGIServer, make_server

from mlserve.errors import ArtifactError, ArtifactIntegrityError
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn, load_runtime
from mlserve.types import MANIFEST_FILE, file_sha256

PREFIX = "models"
MODEL = "iris"
CLI_TIMEOUT_S = 120
FAILURE_TIMEOUT_S = 60.0
RELOAD_INTERVAL_S = 0.5
Result = subprocess.CompletedProcess[str]
AWS_MAX_ATTEMPTS = "2"
"""botocore's own setting (its default, 5 attempts, takes ~10 s to give up on a closed port)."""


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are recorded by S3Server, not printed."""


@dataclass
class S3Server:
    """moto's S3 server on a loopback port, and the requests it received."""

    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The URL clients set as AWS_ENDPOINT_URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a thread, as moto's ThreadedMotoServer does."""
        moto = DomainDispatcherApplication(create_backend_app)

        def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
            return moto(environ, start_response)

        self._server = make_server(
            "127.0.0.1", self.port, recorded, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port: clients get 'connection refused' from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def downloads(self, bucket: str, key: str) -> int:
        """GET requests for one object so far."""
        return self.requests.count(("GET", f"/{bucket}/{key}"))

    def client(self) -> Any:
        """A boto3 client of this server, for the tests' own set-up and checks."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture
def s3() -> Iterator[S3Server]:
    """A fresh S3 server (moto keeps its buckets in memory): stopped after the test."""
    server = S3Server(free_port())
    server.start()
    yield server
    server.stop()


def aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """What a user sets to reach an S3-compatible store: standard AWS variables only (and no
    shared config files or instance metadata that could answer for them)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": AWS_MAX_ATTEMPTS,
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def aws_env(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's AWS variables pointed at ``s3``; fresh s3fs clients read them."""
    env = aws_environment(s3.endpoint, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client keeps the endpoint it was made with
    yield env
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """An empty bucket on ``s3``."""
    name = f"mlserve-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def model_key(version: int, file: str = "model.joblib") -> str:
    """The object key of a version's file under PREFIX."""
    return f"{PREFIX}/{MODEL}/{version}/{file}"


def s3_store(tmp_path: Path, bucket: str, cache: str = "cache") -> RegistryStore:
    """A registry in a SQLite file of ``tmp_path`` with its artifacts in ``bucket``."""
    return RegistryStore(
        f"sqlite:///{tmp_path / 'registry.db'}", f"s3://{bucket}/{PREFIX}", tmp_path / cache
    )


# -- the registry's artifacts on S3 -----------------------------------------------------------------


def test_register_uploads_and_each_node_downloads_a_version_once(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
    tiny_classifier: Pipeline,
    iris_features: pd.DataFrame,
) -> None:
    store = s3_store(tmp_path, bucket)
    try:
        version = store.register_version(MODEL, classifier_file, new_version)
        assert version.artifact_uri == f"s3://{bucket}/{PREFIX}/{MODEL}/1"
        uploaded = s3.client().get_object(Bucket=bucket, Key=model_key(1))["Body"].read()
        assert hashlib.sha256(uploaded).hexdigest() == version.sha256
        manifest = json.loads(
            s3.client().get_object(Bucket=bucket, Key=model_key(1, MANIFEST_FILE))["Body"].read()
        )
        assert (manifest["version"], manifest["sha256"]) == (1, version.sha256)
        assert s3.downloads(bucket, model_key(1)) == 1  # the check above

        folder = store.local_folder(version)
        assert folder.parent == tmp_path / "cache"
        runtime = load_runtime(folder, expected_sha256=version.sha256)
        np.testing.assert_array_equal(
            runtime.predict(iris_features), tiny_classifier.predict(iris_features)
        )
        assert s3.downloads(bucket, model_key(1)) == 2
        assert store.local_folder(version) == folder  # the second load reads the cache
    finally:
        store.close()
    same_node = s3_store(tmp_path, bucket)  # another registry object on this node's cache
    try:
        assert same_node.local_folder(same_node.resolve(MODEL)) == folder
    finally:
        same_node.close()
    assert s3.downloads(bucket, model_key(1)) == 2
    other_node = s3_store(tmp_path, bucket, cache="other-node-cache")
    try:
        assert file_sha256(other_node.local_folder(version) / "model.joblib") == version.sha256
    finally:
        other_node.close()
    assert s3.downloads(bucket, model_key(1)) == 3


LOADER = """
import sys, time
from pathlib import Path
from mlserve.registry import RegistryStore

root, shared = sys.argv[1], Path(sys.argv[2])
store = RegistryStore(f"sqlite:///{shared / 'registry.db'}", root, shared / "cache")
version = store.resolve("iris")
(shared / f"ready-{sys.argv[3]}").touch()
while not (shared / "go").exists():
    time.sleep(0.0005)
print(store.local_folder(version))
store.close()
"""


def test_processes_of_one_node_loading_at_once_download_once(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
) -> None:
    store = s3_store(tmp_path, bucket)
    try:
        store.register_version(MODEL, classifier_file, new_version)
    finally:
        store.close()
    loaders = [
        subprocess.Popen(
            [sys.executable, "-c", LOADER, f"s3://{bucket}/{PREFIX}", str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while not all((tmp_path / f"ready-{i}").exists() for i in range(3)):
        assert all(p.poll() is None for p in loaders), [p.communicate() for p in loaders]
        assert time.monotonic() < deadline, "loaders did not get ready"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    folders = set()
    for loader in loaders:
        stdout, stderr = loader.communicate(timeout=CLI_TIMEOUT_S)
        assert loader.returncode == 0, stderr
        folders.add(stdout.strip())
    assert len(folders) == 1
    assert s3.downloads(bucket, model_key(1)) == 1


def test_a_cached_version_loads_and_is_still_verified_while_the_store_is_down(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
) -> None:
    store = s3_store(tmp_path, bucket)
    try:
        first = store.register_version(MODEL, classifier_file, new_version)
        second = store.register_version(MODEL, classifier_file, new_version)
        folder = store.local_folder(first)
        s3.stop()

        assert store.local_folder(first) == folder
        with pytest.raises(ArtifactError) as unreachable:
            store.local_folder(second)  # never downloaded here
        message = str(unreachable.value)
        assert f"s3://{bucket}/{PREFIX}/{MODEL}/2" in message
        assert s3.endpoint in message
        assert "\n" not in message
        (folder / "model.joblib").write_bytes(b"altered on this node")
        with pytest.raises(ArtifactIntegrityError):
            store.local_folder(first)
    finally:
        store.close()


def test_a_download_that_does_not_match_its_sha256_is_refused_and_not_cached(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
) -> None:
    store = s3_store(tmp_path, bucket)
    try:
        version = store.register_version(MODEL, classifier_file, new_version)
        original = classifier_file.read_bytes()
        s3.client().put_object(Bucket=bucket, Key=model_key(1), Body=b"replaced in the bucket")
        with pytest.raises(ArtifactIntegrityError, match=f"s3://{bucket}/{PREFIX}/{MODEL}/1"):
            store.local_folder(version)
        assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []

        s3.client().put_object(Bucket=bucket, Key=model_key(1), Body=original)
        folder = store.local_folder(version)
        assert file_sha256(folder / "model.joblib") == version.sha256
    finally:
        store.close()


def test_registering_into_a_missing_bucket_takes_no_version_number(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
) -> None:
    missing = f"{bucket}-typo"
    store = RegistryStore(
        f"sqlite:///{tmp_path / 'registry.db'}", f"s3://{missing}/{PREFIX}", tmp_path / "cache"
    )
    try:
        with pytest.raises(ArtifactError, match=f"bucket '{missing}'.*does not exist"):
            store.register_version(MODEL, classifier_file, new_version)
    finally:
        store.close()
    assert missing not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]  # not made
    store = s3_store(tmp_path, bucket)
    try:
        assert store.register_version(MODEL, classifier_file, new_version).version == 1
    finally:
        store.close()


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, iris_frame: pd.DataFrame, tiny_classifier: Pipeline) -> Path:
    """A folder with a model file and its training data, as a user has before registering."""
    root = tmp_path / "project"
    root.mkdir()
    dump_sklearn(tiny_classifier, root / "model.joblib")
    iris_frame.to_csv(root / "train.csv", index=False)
    return root


def mlserve(project: Path, env: dict[str, str], *args: str) -> Result:
    """Run `mlserve ARGS` in ``project`` with ``env`` added to a clean environment."""
    return subprocess.run(
        [MLSERVE, *args],
        cwd=project,
        env=server_environment({"NO_COLOR": "1", "COLUMNS": "200", **env}),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def side_by_side(*calls: Callable[[], Result]) -> list[Result]:
    """Run independent commands at once (each spends seconds importing); their results."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def register_cli(project: Path, env: dict[str, str]) -> Result:
    """`mlserve register` of the project's model with its signature from train.csv."""
    args = ["model.joblib", "--name", MODEL, "--signature-from", "train.csv"]
    return mlserve(project, env, "register", *args, "--target", "species")


def assert_one_line_error(result: Result, *names: str) -> None:
    """A non-zero exit with one line on stderr that names each of ``names``, besides the JSON
    log records `mlserve serve` writes there (botocore's "Found credentials in environment
    variables", say)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], result.stderr


def test_mlserve_register_names_a_missing_bucket_or_an_unreachable_store_then_uploads(
    s3: S3Server, bucket: str, project: Path
) -> None:
    env = aws_environment(s3.endpoint, project)
    root, missing = f"s3://{bucket}/{PREFIX}", f"s3://{bucket}-typo/{PREFIX}"
    closed = f"http://127.0.0.1:{free_port()}"

    typo, down = side_by_side(
        lambda: register_cli(project, {**env, "MLSERVE_ARTIFACT_ROOT": missing}),
        lambda: register_cli(
            project, {**env, "AWS_ENDPOINT_URL": closed, "MLSERVE_ARTIFACT_ROOT": root}
        ),
    )
    assert_one_line_error(typo, f"bucket '{bucket}-typo'", missing)
    assert_one_line_error(down, root, closed)

    registered = register_cli(project, {**env, "MLSERVE_ARTIFACT_ROOT": root})
    assert registered.returncode == 0, registered.stderr
    assert "Registered iris:1" in registered.stdout  # the failed attempts took no number
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([model_key(1), model_key(1, MANIFEST_FILE)])


def test_an_s3_root_without_s3fs_says_what_to_install(tmp_path: Path, project: Path) -> None:
    # s3fs is installed here: a module named s3fs that fails to import stands in for its absence.
    blocker = tmp_path / "without-s3fs"
    blocker.mkdir()
    (blocker / "s3fs.py").write_text("raise ImportError('No module named s3fs')\n")
    result = register_cli(
        project,
        {"PYTHONPATH": str(blocker), "MLSERVE_ARTIFACT_ROOT": "s3://bucket/models"},
    )
    assert_one_line_error(result, "s3://bucket/models", "pip install 'mlserve[s3]'")


# -- a running server -----------------------------------------------------------------------------


def iris_rows(frame: pd.DataFrame) -> list[list[float]]:
    """Three rows of the iris features."""
    return frame.iloc[[0, 12, 25]].to_numpy(dtype=float).tolist()


def answer_version(server: LiveServer, rows: list[list[float]]) -> tuple[int, str]:
    """POST an OIP request for ``rows``; the status and the version that answered."""
    body = {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64"}]}
    body["inputs"][0]["data"] = [x for row in rows for x in row]
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    return response.status_code, response.json().get("model_version", "")


def failed_loads(server: LiveServer) -> int:
    """mlserve_model_loads_total{result="failed"} of MODEL."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mlserve_model_loads_total"
        and sample.labels == {"model": MODEL, "result": "failed"}
    )


def wait_until_failed(server: LiveServer, version: str) -> str:
    """Poll the version's metadata until it says it failed to load; return the reason."""
    deadline = time.monotonic() + FAILURE_TIMEOUT_S
    while True:
        response = httpx.get(f"{server.url}/v2/models/{MODEL}/versions/{version}", timeout=30)
        parameters = response.json().get("parameters", {}) if response.is_success else {}
        if parameters.get("state") == "failed":
            return str(parameters["reason"])
        if time.monotonic() > deadline:
            raise AssertionError(f"version {version} never failed:\n{server.stderr()[-4000:]}")
        time.sleep(0.1)


def test_servers_download_once_and_keep_serving_when_the_store_goes_away(
    s3: S3Server,
    bucket: str,
    project: Path,
    iris_features: pd.DataFrame,
    new_version: NewVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = f"s3://{bucket}/{PREFIX}"
    env = {
        **aws_environment(s3.endpoint, project),
        "MLSERVE_ARTIFACT_ROOT": root,
        "MLSERVE_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    home = project / ".mlserve"
    store = RegistryStore(f"sqlite:///{home / 'registry.db'}", root, home / "cache")
    rows = iris_rows(iris_features)
    try:
        for _ in range(2):
            store.register_version(MODEL, project / "model.joblib", new_version)
        store.set_alias(MODEL, "production", 1)
        with (
            running_server(project, MODEL, env=env) as first,
            running_server(project, MODEL, env=env) as second,
        ):
            assert answer_version(first, rows) == (200, "1")
            assert answer_version(second, rows) == (200, "1")
            assert s3.downloads(bucket, model_key(1)) == 1  # one node, one download

            s3.stop()
            store.set_alias(MODEL, "production", 2)  # the registry (SQLite) still answers

            for server in (first, second):
                reason = wait_until_failed(server, "2")
                assert root in reason, reason
                assert s3.endpoint in reason, reason
                assert answer_version(server, rows) == (200, "1")
                assert failed_loads(server) >= 1  # retried while the store stays down
                record = server.wait_for_log(lambda r: r.get("message") == "model failed to load")
                assert (record["version"], record["reason"]) == ("2", reason)
                assert "Traceback" not in server.stderr()
            for _ in range(10):  # and it goes on answering
                assert answer_version(first, rows) == (200, "1")
            status = mlserve(project, env, "status", "--server", first.url, "--rate-window", "0")
            assert status.returncode == 0, status.stderr
            assert "production→2 but the server answers with v1" in status.stdout

            s3.start()  # the store comes back: the failed load is tried again, no alias move
            for server in (first, second):
                deadline = time.monotonic() + FAILURE_TIMEOUT_S
                while answer_version(server, rows) != (200, "2"):
                    assert time.monotonic() < deadline, "the server never loaded version 2"
                    time.sleep(0.2)
            assert s3.downloads(bucket, model_key(2)) == 1  # still once per node
    finally:
        store.close()


def test_mlserve_serve_names_a_missing_bucket_or_an_unreachable_store_at_start(
    s3: S3Server,
    aws_env: dict[str, str],
    bucket: str,
    project: Path,
    new_version: NewVersion,
) -> None:
    root, missing = f"s3://{bucket}/{PREFIX}", f"s3://{bucket}-typo/{PREFIX}"
    home = project / ".mlserve"
    store = RegistryStore(f"sqlite:///{home / 'registry.db'}", root, home / "cache")
    try:
        store.register_version(MODEL, project / "model.joblib", new_version)
    finally:
        store.close()
    closed = f"http://127.0.0.1:{free_port()}"

    typo, down = side_by_side(
        lambda: mlserve(project, {**aws_env, "MLSERVE_ARTIFACT_ROOT": missing}, "serve", MODEL),
        lambda: mlserve(
            project,
            {**aws_env, "AWS_ENDPOINT_URL": closed, "MLSERVE_ARTIFACT_ROOT": root},
            "serve",
            MODEL,
            "--port",
            str(free_port()),
        ),
    )
    assert_one_line_error(typo, f"bucket '{bucket}-typo'", missing)
    assert_one_line_error(down, root, closed)
