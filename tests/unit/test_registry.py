"""RegistryStore: version numbering, references, aliases and their audit trail, artifacts."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from sklearn.pipeline import Pipeline

from mlserve.errors import (
    AliasNotFound,
    ArtifactIntegrityError,
    Conflict,
    InvalidInput,
    InvalidReference,
    ModelNotFound,
    VersionNotFound,
)
from mlserve.registry import ModelVersion, NewVersion, RegistryStore, TrainingRun
from mlserve.runtimes import load_runtime
from mlserve.types import MANIFEST_FILE, Feature, ModelRef, Signature, file_sha256, read_manifest


def register(store: RegistryStore, name: str, model: Path, new: NewVersion, count: int) -> None:
    """Register ``model`` ``count`` times as versions of ``name``."""
    for _ in range(count):
        store.register_version(name, model, new)


# -- registering versions -----------------------------------------------------------------------


def test_versions_are_numbered_from_one_per_model(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    numbers = [
        registry_store.register_version(name, classifier_file, new_version).version
        for name in ["churn", "churn", "fraud", "churn", "fraud"]
    ]
    assert numbers == [1, 2, 1, 3, 2]


def test_registered_version_keeps_what_it_was_given(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    before = datetime.now(UTC)
    version = registry_store.register_version("churn", classifier_file, new_version, actor="alice")
    assert version.name == "churn"
    assert version.ref == ModelRef("churn", 1)
    assert version.framework == "sklearn"
    assert version.model_file == "model.joblib"
    assert version.sha256 == file_sha256(classifier_file)
    assert version.signature == new_version.signature
    assert version.metrics == {"accuracy": 0.9}
    assert version.params == {"C": 1.0}
    assert version.tags == {"team": "risk"}
    assert version.description == "iris baseline"
    assert version.created_by == "alice"
    assert version.aliases == ()
    assert version.created_at.tzinfo is not None
    assert before <= version.created_at <= datetime.now(UTC)
    assert registry_store.get_version("churn", 1) == version


@pytest.mark.parametrize("name", ["", "-churn", "churn model", "churn\n", "a" * 129, "x/y"])
def test_register_rejects_invalid_model_names(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion, name: str
) -> None:
    with pytest.raises(InvalidReference, match="invalid model name"):
        registry_store.register_version(name, classifier_file, new_version)
    assert registry_store.list_models() == []


def test_register_missing_model_file_is_invalid_input(
    registry_store: RegistryStore, tmp_path: Path, new_version: NewVersion
) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        registry_store.register_version("churn", tmp_path / "nope.joblib", new_version)
    assert registry_store.list_models() == []


def test_failed_artifact_upload_leaves_no_version_behind(
    tmp_path: Path, classifier_file: Path, new_version: NewVersion
) -> None:
    # A regular file where the artifact root's parent folder should be: every upload fails.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    store = RegistryStore(
        f"sqlite:///{tmp_path / 'r.db'}", str(blocker / "artifacts"), tmp_path / "cache"
    )
    try:
        with pytest.raises(OSError, match="blocker"):
            store.register_version("churn", classifier_file, new_version)
        assert store.list_versions("churn") == []
        with pytest.raises(VersionNotFound):
            store.resolve("churn")
        with pytest.raises(VersionNotFound):
            store.get_version("churn", 1)
    finally:
        store.close()


# -- resolving references -----------------------------------------------------------------------


@pytest.fixture
def three_versions(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> RegistryStore:
    """``registry_store`` with versions 1..3 of ``churn`` and nothing else."""
    register(registry_store, "churn", classifier_file, new_version, 3)
    return registry_store


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("churn", 3), ("churn:1", 1), ("churn:2", 2), (ModelRef("churn", 3), 3)],
)
def test_resolve_name_and_version(
    three_versions: RegistryStore, ref: str | ModelRef, expected: int
) -> None:
    assert three_versions.resolve(ref).version == expected


def test_bare_name_follows_production_alias_when_set(three_versions: RegistryStore) -> None:
    three_versions.set_alias("churn", "staging", 3)
    assert three_versions.resolve("churn").version == 3
    three_versions.set_alias("churn", "production", 1)
    assert three_versions.resolve("churn").version == 1
    assert three_versions.resolve("churn@production").version == 1
    assert three_versions.resolve("churn@staging").version == 3


def test_resolved_version_lists_its_aliases(three_versions: RegistryStore) -> None:
    three_versions.set_alias("churn", "staging", 2)
    three_versions.set_alias("churn", "production", 2)
    assert three_versions.resolve("churn:2").aliases == ("production", "staging")
    assert three_versions.resolve("churn:3").aliases == ()


def test_unknown_model_raises_model_not_found(three_versions: RegistryStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'fraud' is not registered") as caught:
        three_versions.resolve("fraud")
    assert caught.value.name == "fraud"
    for call in (
        lambda: three_versions.get_version("fraud", 1),
        lambda: three_versions.list_versions("fraud"),
        lambda: three_versions.set_alias("fraud", "production", 1),
        lambda: three_versions.alias_history("fraud"),
        lambda: three_versions.list_runs("fraud"),
    ):
        with pytest.raises(ModelNotFound):
            call()


def test_unknown_version_raises_version_not_found(three_versions: RegistryStore) -> None:
    with pytest.raises(VersionNotFound, match="model 'churn' has no version 4") as caught:
        three_versions.resolve("churn:4")
    assert (caught.value.name, caught.value.version) == ("churn", 4)
    with pytest.raises(VersionNotFound):
        three_versions.get_version("churn", 99)


def test_unknown_alias_raises_alias_not_found(three_versions: RegistryStore) -> None:
    with pytest.raises(AliasNotFound, match="model 'churn' has no alias 'canary'") as caught:
        three_versions.resolve("churn@canary")
    assert (caught.value.name, caught.value.alias) == ("churn", "canary")


def test_malformed_reference_raises_invalid_reference(three_versions: RegistryStore) -> None:
    with pytest.raises(InvalidReference):
        three_versions.resolve("churn:two")


# -- aliases ------------------------------------------------------------------------------------


def test_moving_an_alias_records_from_to_and_actor(three_versions: RegistryStore) -> None:
    created = three_versions.set_alias("churn", "production", 1, actor="alice")
    moved = three_versions.set_alias("churn", "production", 2, actor="bob")
    assert (created.from_version, created.to_version, created.actor) == (None, 1, "alice")
    assert (moved.from_version, moved.to_version, moved.actor) == (1, 2, "bob")
    assert moved.alias == "production"
    assert moved.name == "churn"
    assert three_versions.resolve("churn@production").version == 2
    assert three_versions.get_version("churn", 1).aliases == ()
    assert three_versions.list_models()[0].aliases == {"production": 2}
    history = three_versions.alias_history("churn")
    assert history == [created, moved]
    assert history[0].at <= history[1].at
    assert history[1].at.tzinfo is not None


def test_deleting_an_alias_records_it_and_bare_name_falls_back_to_latest(
    three_versions: RegistryStore,
) -> None:
    three_versions.set_alias("churn", "production", 1)
    deleted = three_versions.delete_alias("churn", "production", actor="carol")
    assert (deleted.from_version, deleted.to_version, deleted.actor) == (1, None, "carol")
    assert three_versions.alias_history("churn")[-1] == deleted
    assert three_versions.resolve("churn").version == 3
    with pytest.raises(AliasNotFound):
        three_versions.resolve("churn@production")


def test_deleting_an_unknown_alias_raises_and_records_nothing(
    three_versions: RegistryStore,
) -> None:
    with pytest.raises(AliasNotFound, match="no alias 'production'"):
        three_versions.delete_alias("churn", "production")
    assert three_versions.alias_history("churn") == []


def test_alias_to_unknown_version_is_refused_without_a_trace(
    three_versions: RegistryStore,
) -> None:
    three_versions.set_alias("churn", "production", 2)
    with pytest.raises(VersionNotFound):
        three_versions.set_alias("churn", "production", 9)
    assert three_versions.resolve("churn@production").version == 2
    assert len(three_versions.alias_history("churn")) == 1


@pytest.mark.parametrize(("alias", "error"), [("3", Conflict), ("bad alias", InvalidReference)])
def test_alias_names_are_checked(
    three_versions: RegistryStore, alias: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        three_versions.set_alias("churn", alias, 1)
    assert three_versions.alias_history("churn") == []


def test_concurrent_alias_moves_leave_an_unbroken_audit_trail(
    three_versions: RegistryStore,
) -> None:
    # Each move must read the alias it replaces under the same lock it writes with; otherwise
    # two movers both record the same "from" and the trail forks.
    three_versions.set_alias("churn", "production", 1)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def mover(worker: int) -> None:
        try:
            start.wait()
            for step in range(8):
                target = (worker + step) % 3 + 1
                three_versions.set_alias("churn", "production", target, actor=f"w{worker}")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    history = three_versions.alias_history("churn")
    assert len(history) == 1 + 4 * 8
    for before, after in itertools.pairwise(history):
        assert after.from_version == before.to_version
    assert three_versions.resolve("churn@production").version == history[-1].to_version


# -- listing ------------------------------------------------------------------------------------


def test_list_models_summarizes_each_model_by_name(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    assert registry_store.list_models() == []
    register(registry_store, "fraud", classifier_file, new_version, 1)
    register(registry_store, "churn", classifier_file, new_version, 3)
    registry_store.set_alias("churn", "production", 2)
    churn, fraud = registry_store.list_models()
    assert (churn.name, churn.latest_version, churn.version_count) == ("churn", 3, 3)
    assert churn.aliases == {"production": 2}
    assert (fraud.name, fraud.latest_version, fraud.version_count) == ("fraud", 1, 1)
    assert fraud.aliases == {}


def test_list_versions_is_oldest_first_and_per_model(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    register(registry_store, "churn", classifier_file, new_version, 3)
    register(registry_store, "fraud", classifier_file, new_version, 2)
    assert [v.version for v in registry_store.list_versions("churn")] == [1, 2, 3]
    assert [v.name for v in registry_store.list_versions("fraud")] == ["fraud", "fraud"]


# -- archiving and deleting versions --------------------------------------------------------------


def test_an_archived_version_is_never_resolved_aliased_or_listed_again(
    three_versions: RegistryStore,
) -> None:
    event = three_versions.archive_version("churn", 3, actor="alice", reason="wrong month")
    assert (event.version, event.action, event.actor, event.reason) == (3, "archive", "alice",
                                                                          "wrong month")  # fmt: skip
    with pytest.raises(VersionNotFound, match=r"no version 3 \(it is archived\)"):
        three_versions.resolve("churn:3")
    with pytest.raises(VersionNotFound, match="archived"):
        three_versions.set_alias("churn", "staging", 3)
    assert three_versions.resolve("churn").version == 2  # the latest is the newest not archived
    assert [v.version for v in three_versions.list_versions("churn")] == [1, 2]
    (info,) = three_versions.list_models()
    assert (info.latest_version, info.version_count) == (2, 2)
    assert (
        three_versions.register_version("churn", *_file_and_new(three_versions, 1)).version == 4
    )  # numbers are never reused


def _file_and_new(store: RegistryStore, version: int) -> tuple[Path, NewVersion]:
    """The model file and metadata of a registered version, to register it again."""
    registered = store.get_version("churn", version)
    folder = store.local_folder(registered)
    return folder / registered.model_file, NewVersion("sklearn", registered.signature)


def test_a_version_in_use_is_not_archived(three_versions: RegistryStore) -> None:
    three_versions.set_alias("churn", "production", 1)
    three_versions.set_alias("churn", "staging", 2)
    with pytest.raises(Conflict, match="alias production points at it"):
        three_versions.archive_version("churn", 1)
    three_versions.start_rollout("churn", 3, canary=0.1)
    with pytest.raises(Conflict, match="the active rollout uses it"):
        three_versions.archive_version("churn", 3)
    with pytest.raises(Conflict, match="alias staging points at it"):
        three_versions.archive_version("churn", 2)
    assert three_versions.version_events("churn") == []
    assert [v.version for v in three_versions.list_versions("churn")] == [1, 2, 3]


def test_a_never_served_version_is_deleted_with_its_artifacts_and_recorded(
    three_versions: RegistryStore,
) -> None:
    folder = Path(three_versions.get_version("churn", 3).artifact_uri)
    assert folder.is_dir()
    event = three_versions.delete_version("churn", 3, actor="bob")
    assert (event.version, event.action, event.actor) == (3, "delete", "bob")
    assert not folder.exists()
    with pytest.raises(VersionNotFound):
        three_versions.get_version("churn", 3)
    assert [e.action for e in three_versions.version_events("churn")] == ["delete"]
    assert three_versions.register_version("churn", *_file_and_new(three_versions, 1)).version == 4


def test_a_version_that_was_ever_served_is_archived_not_deleted(
    three_versions: RegistryStore,
) -> None:
    three_versions.set_alias("churn", "production", 1)
    three_versions.set_alias("churn", "production", 2)  # 1 was served, and no alias is on it now
    three_versions.start_rollout("churn", 3, canary=0.1)
    three_versions.rollback_rollout("churn", "test")
    for version, how in ((1, "alias production pointed at it"), (3, "used it")):
        with pytest.raises(Conflict, match=f"was served \\(.*{how}\\); archive it instead"):
            three_versions.delete_version("churn", version)
    three_versions.archive_version("churn", 1)
    with pytest.raises(Conflict, match="archive it instead"):
        three_versions.delete_version("churn", 1)  # archived, and it was served
    assert [e.action for e in three_versions.version_events("churn")] == ["archive"]


# -- training runs ------------------------------------------------------------------------------


def _run(version: int | None, accuracy: float) -> TrainingRun:
    return TrainingRun(
        id=0,
        name="ignored",
        version=version,
        estimator="logistic_regression",
        task="classification",
        params={"C": 1.0},
        metrics={"accuracy": accuracy},
        baseline_metrics={"accuracy": 0.33},
        data_path="data/iris.csv",
        data_fingerprint="sha256:abc",
        rows_train=24,
        rows_test=6,
        duration_s=0.25,
        git_commit="deadbeef",
        started_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    )


def test_training_runs_are_recorded_and_listed_newest_first(three_versions: RegistryStore) -> None:
    first = three_versions.record_run("churn", _run(1, 0.8))
    second = three_versions.record_run("churn", _run(None, 0.9))
    assert first.id != second.id
    assert first == replace(_run(1, 0.8), id=first.id, name="churn")
    assert three_versions.list_runs("churn") == [second, first]
    assert three_versions.list_runs() == [second, first]
    assert second.started_at == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_training_runs_are_listed_per_model(
    three_versions: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    three_versions.register_version("fraud", classifier_file, new_version)
    churn_run = three_versions.record_run("churn", _run(1, 0.8))
    fraud_run = three_versions.record_run("fraud", _run(1, 0.7))
    assert three_versions.list_runs("churn") == [churn_run]
    assert three_versions.list_runs("fraud") == [fraud_run]
    assert [r.name for r in three_versions.list_runs()] == ["fraud", "churn"]


def test_recording_a_run_for_an_unknown_model_fails(registry_store: RegistryStore) -> None:
    with pytest.raises(ModelNotFound):
        registry_store.record_run("ghost", _run(None, 0.5))


# -- artifacts ----------------------------------------------------------------------------------


def test_artifact_folder_is_self_describing(
    tmp_path: Path,
    registry_store: RegistryStore,
    classifier_file: Path,
    new_version: NewVersion,
    tiny_classifier: Pipeline,
    iris_features: pd.DataFrame,
) -> None:
    version = registry_store.register_version("churn", classifier_file, new_version)
    registry_store.close()
    (tmp_path / "registry.db").unlink()  # everything below works from the folder alone

    folder = Path(version.artifact_uri)
    assert folder == (tmp_path / "artifacts" / "churn" / "1").resolve()
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, "model.joblib"]
    manifest = read_manifest(folder)
    assert (manifest.name, manifest.version, manifest.framework) == ("churn", 1, "sklearn")
    assert manifest.sha256 == version.sha256
    assert manifest.signature == new_version.signature
    assert manifest.metrics == new_version.metrics
    assert manifest.tags == new_version.tags
    assert manifest.description == new_version.description

    runtime = load_runtime(folder, expected_sha256=version.sha256)
    np.testing.assert_array_equal(
        runtime.predict(iris_features), tiny_classifier.predict(iris_features)
    )


def test_local_folder_of_a_local_root_is_the_artifact_folder(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    version = registry_store.register_version("churn", classifier_file, new_version)
    assert registry_store.local_folder(version) == Path(version.artifact_uri)


def test_tampered_model_file_fails_the_integrity_check(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    version = registry_store.register_version("churn", classifier_file, new_version)
    stored = Path(version.artifact_uri) / version.model_file
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check") as caught:
        registry_store.local_folder(version)
    assert caught.value.expected == version.sha256


def test_model_file_swapped_with_its_manifest_fails_the_integrity_check(
    registry_store: RegistryStore,
    classifier_file: Path,
    new_version: NewVersion,
    tmp_path: Path,
) -> None:
    version = registry_store.register_version("churn", classifier_file, new_version)
    folder = Path(version.artifact_uri)
    (folder / version.model_file).write_bytes(b"something else")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["sha256"] = file_sha256(folder / version.model_file)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError):
        registry_store.local_folder(version)


@pytest.fixture
def memory_store(tmp_path: Path) -> Iterator[tuple[RegistryStore, str]]:
    """A registry whose artifacts live in fsspec's in-memory file system; yields it and its root."""
    root = f"memory://mlserve-{uuid.uuid4().hex}"
    store = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}", root, tmp_path / "cache")
    yield store, root
    store.close()
    MemoryFileSystem().rm(root, recursive=True)


def test_remote_artifacts_are_downloaded_into_the_cache_and_verified(
    memory_store: tuple[RegistryStore, str],
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
    tiny_classifier: Pipeline,
    iris_features: pd.DataFrame,
) -> None:
    store, root = memory_store
    version = store.register_version("churn", classifier_file, new_version)
    assert version.artifact_uri.startswith("memory://")
    assert version.artifact_uri.endswith(f"{root.removeprefix('memory://')}/churn/1")
    assert MemoryFileSystem().exists(f"{root}/churn/1/{MANIFEST_FILE}")

    folder = store.local_folder(version)
    assert folder.parent == tmp_path / "cache"
    assert file_sha256(folder / "model.joblib") == version.sha256
    assert read_manifest(folder).version == 1
    assert store.local_folder(version) == folder  # the second call reuses the download
    runtime = load_runtime(folder, expected_sha256=version.sha256)
    np.testing.assert_array_equal(
        runtime.predict(iris_features), tiny_classifier.predict(iris_features)
    )


def test_remote_versions_sharing_a_model_file_keep_their_own_manifests(
    memory_store: tuple[RegistryStore, str], classifier_file: Path, new_version: NewVersion
) -> None:
    # Re-registering the same file with a new signature must not serve the old manifest.
    store, _ = memory_store
    first = store.register_version("churn", classifier_file, new_version)
    reordered = Signature(tuple(reversed(new_version.signature.inputs)))
    second = store.register_version(
        "churn", classifier_file, replace(new_version, signature=reordered)
    )
    assert first.sha256 == second.sha256

    first_folder = store.local_folder(first)
    second_folder = store.local_folder(second)
    assert read_manifest(first_folder).version == 1
    assert read_manifest(second_folder).version == 2
    assert read_manifest(second_folder).signature == reordered


def test_tampered_remote_model_file_fails_the_integrity_check(
    memory_store: tuple[RegistryStore, str], classifier_file: Path, new_version: NewVersion
) -> None:
    store, root = memory_store
    version = store.register_version("churn", classifier_file, new_version)
    MemoryFileSystem().pipe_file(f"{root}/churn/1/model.joblib", b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        store.local_folder(version)


def test_version_signature_is_stored_exactly(
    registry_store: RegistryStore, classifier_file: Path
) -> None:
    signature = Signature(
        inputs=(
            Feature("age", "int64", nullable=False),
            Feature("city", "string", "categorical", ("Lyon", "Paris")),
            Feature("is_member", "bool", "boolean"),
        ),
        task="classification",
        classes=(0, 1),
        target="churned",
    )
    new = NewVersion(framework="sklearn", signature=signature, reference_profile={"rows": 3})
    version: ModelVersion = registry_store.register_version("churn", classifier_file, new)
    assert registry_store.get_version("churn", version.version).signature == signature
    assert registry_store.get_version("churn", 1).reference_profile == {"rows": 3}
