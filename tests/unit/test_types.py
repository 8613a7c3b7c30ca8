"""Model references, signatures, manifests and artifact verification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.errors import ArtifactError, ArtifactIntegrityError, InvalidReference
from mlserve.types import (
    MANIFEST_FILE,
    Feature,
    ModelRef,
    Signature,
    VersionManifest,
    VersionPolicy,
    check_name,
    file_sha256,
    read_manifest,
    verify_artifact,
)

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True)
refs = st.builds(
    ModelRef,
    name=names,
    version=st.none() | st.integers(min_value=1, max_value=10**12),
    alias=st.none(),
) | st.builds(ModelRef, name=names, version=st.none(), alias=names)


# -- ModelRef -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn", ModelRef("churn")),
        ("churn:3", ModelRef("churn", version=3)),
        ("churn@production", ModelRef("churn", alias="production")),
        ("Fraud_v2.1-beta", ModelRef("Fraud_v2.1-beta")),
        ("  churn:12  ", ModelRef("churn", version=12)),
        ("7up@canary-2", ModelRef("7up", alias="canary-2")),
        ("a" * 128, ModelRef("a" * 128)),
    ],
)
def test_parse_accepts_name_version_and_alias(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ":3",
        "@production",
        "churn:",
        "churn@",
        "churn:abc",
        "churn:3@production",
        "churn@production:3",
        "churn::3",
        "-churn",
        "_churn",
        ".churn",
        "chu rn",
        "churn/3",
        "churn:3.5",
        "a" * 129,
        "churn@" + "p" * 129,
        "churn\n:3",
    ],
)
def test_parse_rejects_malformed_reference(text: str) -> None:
    with pytest.raises(InvalidReference, match="expected NAME, NAME:VERSION or NAME@ALIAS"):
        ModelRef.parse(text)


@pytest.mark.parametrize("text", ["churn:0", "churn:000"])
def test_parse_rejects_version_zero(text: str) -> None:
    with pytest.raises(InvalidReference, match="versions start at 1"):
        ModelRef.parse(text)


def test_parse_error_quotes_the_input() -> None:
    with pytest.raises(InvalidReference) as caught:
        ModelRef.parse("churn:latest")
    assert "'churn:latest'" in str(caught.value)


@given(refs)
def test_str_then_parse_round_trips(ref: ModelRef) -> None:
    assert ModelRef.parse(str(ref)) == ref


@given(st.text(max_size=40))
def test_parse_either_succeeds_canonically_or_raises_invalid_reference(text: str) -> None:
    try:
        ref = ModelRef.parse(text)
    except InvalidReference:
        return
    assert ModelRef.parse(str(ref)) == ref
    assert ref.version is None or ref.alias is None
    assert check_name(ref.name) == ref.name


@pytest.mark.parametrize("value", ["churn\n", "churn\n:3", "\nchurn", "ch\nurn", "churn "])
def test_check_name_rejects_whitespace_anywhere(value: str) -> None:
    # A trailing newline once slipped through `$`, creating models whose names nobody can type.
    with pytest.raises(InvalidReference, match="invalid model name"):
        check_name(value)


def test_check_name_names_what_it_checks() -> None:
    with pytest.raises(InvalidReference, match="invalid alias '-x'"):
        check_name("-x", "alias")


# -- Signature, Feature, VersionManifest -------------------------------------------------------

features = st.builds(
    Feature,
    name=st.text(min_size=1, max_size=20),
    dtype=st.sampled_from(["float64", "int64", "bool", "string"]),
    kind=st.sampled_from(["numeric", "categorical", "boolean"]),
    categories=st.lists(st.text(max_size=10), max_size=5).map(tuple),
    nullable=st.booleans(),
)
signatures = st.builds(
    Signature,
    inputs=st.lists(features, max_size=6).map(tuple),
    task=st.sampled_from([None, "classification", "regression"]),
    outputs=st.lists(st.sampled_from(["predict", "predict_proba"]), min_size=1).map(tuple),
    classes=st.lists(st.integers() | st.text(max_size=8), max_size=4).map(tuple),
    target=st.none() | st.text(max_size=10),
)


def _through_json(data: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(data))


@given(features)
def test_feature_round_trips_through_json(feature: Feature) -> None:
    assert Feature.from_dict(_through_json(feature.to_dict())) == feature


@given(signatures)
def test_signature_round_trips_through_json(signature: Signature) -> None:
    assert Signature.from_dict(_through_json(signature.to_dict())) == signature


def test_feature_from_dict_fills_defaults() -> None:
    assert Feature.from_dict({"name": "age", "dtype": "int64"}) == Feature("age", "int64")


def test_signature_lists_feature_names_in_order(iris_signature: Signature) -> None:
    assert iris_signature.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert iris_signature.is_all_numeric


def test_signature_with_a_categorical_is_not_all_numeric() -> None:
    signature = Signature((Feature("age", "int64"), Feature("city", "string", "categorical")))
    assert not signature.is_all_numeric


@given(signature=signatures)
def test_manifest_round_trips_through_json(signature: Signature) -> None:
    manifest = VersionManifest(
        name="churn",
        version=4,
        framework="sklearn",
        model_file="model.skops",
        sha256="ab" * 32,
        signature=signature,
        created_at="2026-01-01T00:00:00+00:00",
        metrics={"auc": 0.91},
        params={"C": 0.5, "penalty": "l2", "layers": [3, 2]},
        tags={"team": "risk"},
        description="weekly retrain",
        data_fingerprint="sha256:" + "0" * 64,
        reference_profile={"rows": 3, "features": {}},
        mlserve_version="0.1.0",
    )
    assert VersionManifest.from_dict(_through_json(manifest.to_dict())) == manifest


def test_manifest_from_dict_ignores_fields_it_does_not_know(version_folder: Path) -> None:
    data = json.loads((version_folder / MANIFEST_FILE).read_text())
    expected = VersionManifest.from_dict(data)
    data["added_in_a_later_release"] = {"x": 1}
    assert VersionManifest.from_dict(data) == expected


# -- read_manifest and verify_artifact ----------------------------------------------------------


def test_verify_artifact_returns_the_manifest_of_an_intact_folder(version_folder: Path) -> None:
    manifest = verify_artifact(version_folder)
    assert manifest.name == "iris"
    assert manifest.version == 1
    assert manifest.sha256 == file_sha256(version_folder / "model.joblib")


def test_verify_artifact_accepts_the_matching_expected_sha(version_folder: Path) -> None:
    sha = file_sha256(version_folder / "model.joblib")
    assert verify_artifact(version_folder, expected_sha256=sha).sha256 == sha


def test_verify_artifact_rejects_a_tampered_model_file(version_folder: Path) -> None:
    model_path = version_folder / "model.joblib"
    registered = file_sha256(model_path)
    with model_path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check") as caught:
        verify_artifact(version_folder)
    assert caught.value.expected == registered
    assert caught.value.actual == file_sha256(model_path)
    assert caught.value.uri == str(model_path)


def test_verify_artifact_rejects_a_file_swapped_together_with_its_manifest(
    version_folder: Path,
) -> None:
    # Whoever can rewrite the folder can rewrite mlserve.json too; the registry's sha still wins.
    model_path = version_folder / "model.joblib"
    registered = file_sha256(model_path)
    model_path.write_bytes(b"not the model")
    data = json.loads((version_folder / MANIFEST_FILE).read_text())
    data["sha256"] = file_sha256(model_path)
    (version_folder / MANIFEST_FILE).write_text(json.dumps(data))
    assert verify_artifact(version_folder).sha256 == data["sha256"]
    with pytest.raises(ArtifactIntegrityError):
        verify_artifact(version_folder, expected_sha256=registered)


def test_verify_artifact_without_manifest_is_an_artifact_error(version_folder: Path) -> None:
    (version_folder / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"mlserve\.json is missing") as caught:
        verify_artifact(version_folder)
    assert not isinstance(caught.value, ArtifactIntegrityError)


def test_verify_artifact_without_model_file_is_an_artifact_error(version_folder: Path) -> None:
    (version_folder / "model.joblib").unlink()
    with pytest.raises(ArtifactError, match=r"model file .* is missing"):
        verify_artifact(version_folder)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"name": "iris"}', '{"name": "iris", "version": 1, "signature": 3}'],
)
def test_read_manifest_rejects_a_broken_manifest(version_folder: Path, content: str) -> None:
    (version_folder / MANIFEST_FILE).write_text(content)
    with pytest.raises(ArtifactError, match="is not a valid manifest"):
        read_manifest(version_folder)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one 1 MiB read block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# -- version policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_policy", "kind", "shown"),
    [
        ("aliases", "aliases", "aliases"),
        (" ALL ", "all", "all"),
        ("latest 3", "latest", "latest 3"),
        ("3,1, 3", "listed", "1,3"),
        ("[2]", "listed", "2"),
        ([5, 4], "listed", "4,5"),
    ],
)
def test_version_policies_read_every_documented_form(
    given_policy: str | list[int], kind: str, shown: str
) -> None:
    policy = VersionPolicy.parse(given_policy)
    assert policy.kind == kind
    assert str(policy) == shown
    assert VersionPolicy.parse(str(policy)) == policy  # what is shown reads back the same


@pytest.mark.parametrize("bad", ["", "latest", "latest 0", "latest -1", "newest 2", "1,x", "0", []])
def test_a_bad_version_policy_names_itself(bad: str | list[int]) -> None:
    with pytest.raises(ValueError, match="invalid version policy"):
        VersionPolicy.parse(bad)


@given(
    registered=st.sets(st.integers(1, 40)),
    aliased=st.sets(st.integers(1, 40)),
    count=st.integers(1, 10),
    listed=st.sets(st.integers(1, 40), min_size=1),
)
def test_every_policy_serves_the_aliased_versions_and_only_registered_ones(
    registered: set[int], aliased: set[int], count: int, listed: set[int]
) -> None:
    ordered = sorted(registered)
    for text in ("aliases", "all", f"latest {count}", ",".join(map(str, sorted(listed)))):
        chosen = VersionPolicy.parse(text).select(ordered, aliased)
        assert chosen == sorted(set(chosen), reverse=True)  # newest first, once each
        assert set(chosen) <= registered
        assert aliased & registered <= set(chosen)
    assert set(VersionPolicy.parse("all").select(ordered, aliased)) == registered
    latest = set(VersionPolicy.parse(f"latest {count}").select(ordered, aliased))
    assert latest == (aliased & registered) | set(ordered[-count:])
    assert set(VersionPolicy.parse("aliases").select(ordered, aliased)) == aliased & registered
