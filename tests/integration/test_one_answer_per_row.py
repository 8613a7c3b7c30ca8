"""One answer for one row (issue 13): every door gives a row the same verdict.

The same generated rows (missing values, extremes, unknown categories, wrong types, extra
columns) go through OIP JSON and binary tensors, /v1 (lists and records), /invocations (its four
JSON formats and CSV) of one real `mlserve serve` process, and through `mlserve predict` (CSV and
JSON files) and `mlserve batch` (CSV and JSON Lines, --id-column). Every door must accept the same
rows with identical predictions and class probabilities, and refuse the same rows with the same
reason. Each row is first sent alone to every HTTP door (its own verdict); then the whole example
goes to every door at once, which must answer what the rows' own verdicts imply (the first
rejected row's reason and how many more, or every prediction).

Three models, served by the one server:
- ``wine``: trained by `mlserve train` on numeric features (``proline`` has no missing value in
  training), a boolean column and a categorical one; its pipeline imputes, so missing values are
  accepted (as its own predict says).
- ``forest``: a bare RandomForestClassifier on three numbers and a boolean, registered with a
  signature; it computes in float32 (refuses 1e308, takes 1e30); scikit-learn 1.4+ forests take
  NaN, so whether it takes missing values is asked of the estimator here.
- ``boosted``: a bare GradientBoostingClassifier on the same features: float32, and refuses NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from row_doors import (
    ABSENT,
    EXTRA,
    HTTP_DOORS,
    Accepted,
    Answer,
    Cli,
    Failed,
    Model,
    Rejected,
    Row,
    ServerWarnings,
    Verdict,
    ask_server,
    batch_file,
    dumps,
    expected_answer,
    json_tensor,
    mlflow_csv,
    predict_file,
    v1_records,
    v1_rows,
    write_csv,
    write_json,
    write_json_lines,
)
from serving_harness import LiveServer, running_server
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import FLOAT32_BOUND, dump_sklearn, load_sklearn
from mlserve.training import TrainRequest, normalize_features, train
from mlserve.types import Signature

WINE = "wine"
FOREST = "forest"
BOOSTED = "boosted"
REGIONS = ("east", "north", "south")
NUMERIC_FEATURES = ("f0", "f1", "f2", "flag")


# -- the project and the server --------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """The project folder, its served models, and their fitted estimators loaded here."""

    root: Path
    models: dict[str, Model]
    estimators: dict[str, Any]


def wine_frame(rows: int, seed: int) -> pd.DataFrame:
    """Wine-like rows: alcohol (some missing), proline (none missing), organic (bool), region."""
    rng = np.random.default_rng(seed)
    alcohol = rng.normal(13.0, 0.8, rows).round(2)
    alcohol[:: max(2, rows // 8)] = np.nan
    frame = pd.DataFrame(
        {
            "alcohol": alcohol,
            "proline": rng.integers(300, 1600, rows).astype(np.float64),
            "organic": rng.random(rows) < 0.5,
            "region": rng.choice(REGIONS, rows),
        }
    )
    score = frame["alcohol"].fillna(13) - 13 + (frame["proline"] - 950) / 400 + frame["organic"]
    frame["quality"] = np.where(score + rng.normal(0, 0.5, rows) > 0.5, "good", "plain")
    return frame


def numeric_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Three numbers and a boolean, with a yes/no target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "f0": rng.normal(0, 2, rows).round(3),
            "f1": rng.normal(0, 2, rows).round(3),
            "f2": rng.uniform(-5, 5, rows).round(3),
            "flag": rng.random(rows) < 0.4,
        }
    )
    target = np.where(frame["f0"] + frame["f1"] * frame["flag"] > frame["f2"] / 3, "yes", "no")
    return frame, target


def register(
    store: RegistryStore, name: str, estimator: Any, frame: pd.DataFrame, folder: Path
) -> None:
    """Register a fitted estimator with the signature of ``frame`` and alias it production."""
    folder.mkdir(parents=True, exist_ok=True)
    signature = Signature(
        inputs=describe_features(frame),
        task="classification",
        outputs=("predict", "predict_proba"),
        classes=tuple(str(c) for c in estimator.classes_),
    )
    path = dump_sklearn(estimator, folder / f"{name}.joblib")
    version = store.register_version(
        name, path, NewVersion(framework="sklearn", signature=signature)
    )
    store.set_alias(name, "production", version.version)


def build_project(root: Path) -> Project:
    """A project in ``root`` whose registry holds wine (by `mlserve train`), forest and
    boosted, each aliased production."""
    home = root / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        wine_frame(160, seed=3).to_csv(root / "wine.csv", index=False)
        train(
            store,
            TrainRequest(data=root / "wine.csv", target="quality", name=WINE, alias="production"),
        )
        frame, target = numeric_frame(200, seed=4)
        forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(frame, target)
        register(store, FOREST, forest, frame, root / "staging" / FOREST)
        boosted = GradientBoostingClassifier(n_estimators=15, random_state=0).fit(frame, target)
        register(store, BOOSTED, boosted, frame, root / "staging" / BOOSTED)
        models, estimators = {}, {}
        for name in (WINE, FOREST, BOOSTED):
            version = store.resolve(f"{name}@production")
            signature = version.signature
            assert signature is not None
            models[name] = Model(
                name=name,
                features=tuple(signature.feature_names),
                categorical=frozenset(f.name for f in signature.inputs if f.kind == "categorical"),
                classes=tuple(str(c) for c in signature.classes),
                all_numeric=signature.is_all_numeric,
            )
            folder = store.local_folder(version)
            estimators[name] = load_sklearn(folder / version.model_file, safe=False)
    finally:
        store.close()
    return Project(root, models, estimators)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The project of :func:`build_project`, shared by this module's tests."""
    return build_project(tmp_path_factory.mktemp("one-answer"))


@pytest.fixture(scope="module")
def server(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One `mlserve serve` process serving every production alias of ``project``."""
    with running_server(project.root, log_dir=tmp_path_factory.mktemp("one-answer-logs")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of ``server``."""
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


# -- sending rows through every door ---------------------------------------------------------------


@dataclass(frozen=True)
class Doors:
    """Everything needed to put rows through every door."""

    client: httpx.Client
    server_warnings: ServerWarnings
    cli: Cli
    folders: pytest.TempPathFactory


@pytest.fixture(scope="module")
def doors(
    project: Project,
    server: LiveServer,
    client: httpx.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Doors:
    """The server's client and log, the CLI in the project folder, and a place for files."""
    return Doors(client, ServerWarnings(server.stderr_path), Cli(project.root), tmp_path_factory)


@dataclass(frozen=True)
class Outcome:
    """Each row's verdict at each door that can carry it, and each door's answer to all rows."""

    per_row: list[dict[str, Verdict]]
    whole: dict[str, Answer]
    warnings: dict[str, list[str]]
    """Warnings each door showed (the server's log, each command's standard error)."""


def single(answer: Answer) -> Verdict:
    """A one-row request's answer as that row's verdict."""
    if answer.per_row is not None:
        return answer.per_row[0]
    if answer.first_rejected is not None:
        row, reason, more = answer.first_rejected
        if row == 0 and more == 0:
            return Rejected(reason)
        return Failed(f"refused as row {row} with {more} more: {reason}")
    return Failed(answer.failure or "no answer")


def send_everywhere(doors: Doors, model: Model, rows: Sequence[Row]) -> Outcome:
    """Put ``rows`` through every door: each row alone to each HTTP door, all of them at once to
    each HTTP door and each CLI door."""
    per_row: list[dict[str, Verdict]] = [{} for _ in rows]
    whole: dict[str, Answer] = {}
    for door, render in HTTP_DOORS.items():
        for index, row in enumerate(rows):
            request = render(model, [row])
            if request is not None:
                per_row[index][door] = single(ask_server(doors.client, model, request, 1))
        request = render(model, rows)
        if request is not None and len(rows) > 1:
            whole[door] = ask_server(doors.client, model, request, len(rows))
    folder = doors.folders.mktemp(model.name)
    csv_file = write_csv(model, rows, folder / "rows.csv", ids=False)
    if csv_file is not None:
        whole["predict-csv"] = predict_file(doors.cli, model, csv_file)
    whole["predict-json"] = predict_file(doors.cli, model, write_json(rows, folder / "rows.json"))
    batch_csv = write_csv(model, rows, folder / "batch.csv", ids=True)
    if batch_csv is not None:
        whole["batch-csv"] = batch_file(doors.cli, model, batch_csv, len(rows))
    whole["batch-jsonl"] = batch_file(
        doors.cli, model, write_json_lines(rows, folder / "batch.jsonl"), len(rows)
    )
    shown = {door: list(answer.warnings) for door, answer in whole.items() if answer.warnings}
    if server_shown := doors.server_warnings.new():
        shown["server"] = server_shown
    return Outcome(per_row, whole, shown)


PROBA_REL_TOL = 1e-12
"""How far a row's probabilities may move with the rows scored beside it. The model's own
arithmetic is not row by row to the last bit: scikit-learn's LogisticRegression multiplies a
one-row matrix and a two-row matrix through different BLAS paths (checked in-process, outside
mlserve). Doors given the same rows must agree exactly."""


def same(a: Verdict, b: Verdict, *, exact: bool = True) -> bool:
    """Equal verdicts; probabilities are compared where both doors give them, to the last bit
    unless ``exact`` is False (the same row scored beside other rows)."""
    if isinstance(a, Accepted) and isinstance(b, Accepted):
        if a.label != b.label:
            return False
        if not a.proba or not b.proba or exact:
            return not a.proba or not b.proba or a.proba == b.proba
        return all(
            math.isclose(x, y, rel_tol=PROBA_REL_TOL, abs_tol=1e-300)
            for x, y in zip(a.proba, b.proba, strict=True)
        )
    return a == b


def same_answer(a: Answer, b: Answer, *, exact: bool = True) -> bool:
    """Equal answers to a whole request."""
    if a.per_row is not None and b.per_row is not None:
        return len(a.per_row) == len(b.per_row) and all(
            same(x, y, exact=exact) for x, y in zip(a.per_row, b.per_row, strict=True)
        )
    return a == b


def disagreements(outcome: Outcome, rows: Sequence[Row]) -> tuple[list[Verdict], list[str]]:
    """Each row's verdict (at the first door that carried it), and every way the doors disagree:
    about a row sent alone (exactly), about all rows at once against the rows' own verdicts, and
    among the doors that scored all rows at once (exactly)."""
    problems: list[str] = []
    verdicts: list[Verdict] = []
    for index, (row, by_door) in enumerate(zip(rows, outcome.per_row, strict=True)):
        first_door, reference = next(iter(by_door.items()))
        verdicts.append(reference)
        for door, verdict in by_door.items():
            if isinstance(verdict, Failed):
                problems.append(f"row {index} {dict(row)!r}: {door} failed: {verdict.what}")
            elif not same(verdict, reference):
                problems.append(
                    f"row {index} {dict(row)!r}: {first_door} says {reference}, "
                    f"{door} says {verdict}"
                )
    expected = expected_answer(verdicts)
    if expected is not None:
        for door, answer in outcome.whole.items():
            wanted = expected
            if door.startswith("batch"):  # every row's own verdict, whatever the others'
                wanted = Answer(per_row=tuple(verdicts))
            if not same_answer(answer, wanted, exact=False):
                problems.append(
                    f"all rows {[dict(r) for r in rows]!r}: {door} says {answer}, "
                    f"the rows' own verdicts imply {wanted}"
                )
    for index in range(len(rows)):
        probas = {
            door: verdict.proba
            for door, answer in outcome.whole.items()
            if answer.per_row is not None
            and len(answer.per_row) == len(rows)
            and isinstance(verdict := answer.per_row[index], Accepted)
            and verdict.proba
        }
        if len(set(probas.values())) > 1:
            problems.append(f"row {index} {dict(rows[index])!r} among all rows: {probas}")
    return verdicts, problems


KNOWN_WARNINGS = {FOREST: "X does not have valid feature names"}
"""The one warning of a known defect (see
test_a_forest_fitted_on_a_frame_scores_a_missing_value_without_a_warning): tolerated for that
model only, so every other warning still fails the properties."""


def one_answer(outcome: Outcome, model: Model, rows: Sequence[Row]) -> list[Verdict]:
    """Assert that every door gave every row the same verdict, and that no door showed a
    warning; return each row's verdict."""
    verdicts, problems = disagreements(outcome, rows)
    known = KNOWN_WARNINGS.get(model.name)
    for door, shown in outcome.warnings.items():
        problems.extend(
            f"{door} warned: {text}" for text in shown if known is None or known not in text
        )
    assert not problems, "\n".join(problems)
    return verdicts


# -- what the estimators themselves take -------------------------------------------------------------


def answers(estimator: Any, frame: pd.DataFrame) -> bool:
    """True when the estimator predicts ``frame`` with finite probabilities, without error."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            estimator.predict(frame)
            return bool(np.isfinite(estimator.predict_proba(frame)).all())
        except ValueError:
            return False


def model_frame(project: Project, name: str, row: Row) -> pd.DataFrame:
    """One row as the estimator was trained on (booleans as numbers, categories as text)."""
    frame = pd.DataFrame([{f: row[f] for f in project.models[name].features}])
    if name == WINE:
        frame["region"] = frame["region"].astype(object)
        return normalize_features(
            frame.astype({"alcohol": float, "proline": float, "organic": float})
        )
    return frame.astype(float)


VALID_WINE: Row = {"alcohol": 13.2, "proline": 1050.0, "organic": True, "region": "north"}
VALID_NUMERIC: Row = {"f0": 0.5, "f1": -1.25, "f2": 2.0, "flag": True}


def valid_row(name: str) -> Row:
    """A row every model takes."""
    return VALID_WINE if name == WINE else VALID_NUMERIC


def test_the_metadata_says_what_each_model_takes(project: Project, client: httpx.Client) -> None:
    """`missing_accepted` per feature is what the estimator itself answers for a missing value."""
    for name, model in project.models.items():
        features = client.get(f"/v2/models/{name}").json()["parameters"]["features"]
        shown = {f["name"]: f["parameters"]["missing_accepted"] for f in features}
        estimator = project.estimators[name]
        base = valid_row(name)
        assert answers(estimator, model_frame(project, name, base))
        expected = {
            f: answers(estimator, model_frame(project, name, {**base, f: math.nan}))
            for f in model.features
        }
        assert shown == expected, name
    # What follows from the models chosen: wine imputes (proline too, though training had no
    # missing proline), boosted refuses NaN.
    assert all(shown_for(client, WINE).values())
    inputs = client.get(f"/v1/models/{WINE}").json()["signature"]["inputs"]
    assert {f["name"]: f["nullable"] for f in inputs}["proline"] is False
    assert not any(shown_for(client, BOOSTED).values())


def shown_for(client: httpx.Client, name: str) -> dict[str, bool]:
    features = client.get(f"/v2/models/{name}").json()["parameters"]["features"]
    return {f["name"]: f["parameters"]["missing_accepted"] for f in features}


# -- generated rows --------------------------------------------------------------------------------

WEIRD_CELLS: list[Any] = [
    None,
    ABSENT,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    -3.5e38,
    1e30,
    FLOAT32_BOUND,
    float(np.nextafter(FLOAT32_BOUND, 0)),
    5e-324,
    -0.0,
    2.0,
    0.0,
    1.0,
    2**53 + 1,
    2**63,
    2**64,
    10**30,
    10**400,
    -(10**400),
    0,
    1,
    2,
    99,
    2.5,
    True,
    False,
    " 2.5 ",
    "1e3",
    "+5",
    "-0",
    ".5",
    "5.",
    "1e400",
    "inf",
    "-Infinity",
    "nan",
    "NaN",
    "NA",
    "n/a",
    "",
    "None",
    "null",
    " NA",
    "abc",
    "True",
    "false",
    "TRUE",
    "yes",
    "No",
    "t",
    "F",
    "0",
    "1",
    "2",
    "bogus",
    "North",
    " north",
    "a\nb",
    "1,5",
    'say "hi"',
    "0x10",
    "1_000",
    [1.0],
    [],
    {"a": 1},
]
"""Cells every door must judge alike, for any feature: missing values, extremes, numbers as
text, words, booleans, unknown categories, lists and objects (JSON doors only)."""


def valid_cells(feature: str) -> st.SearchStrategy[Any]:
    """Values a model takes for ``feature``."""
    if feature == "region":
        return st.sampled_from(REGIONS)
    if feature in ("organic", "flag"):
        return st.booleans()
    if feature == "alcohol":
        return st.floats(10.0, 16.0) | st.integers(10, 16)
    if feature == "proline":
        return st.floats(200.0, 1800.0) | st.integers(200, 1800)
    return st.floats(-6.0, 6.0) | st.integers(-6, 6)


@st.composite
def rows_for(draw: st.DrawFn, model: str) -> list[Row]:
    """1 to 6 rows: each cell valid three times in four, else a weird cell or any short text;
    sometimes an extra column."""
    features = tuple(VALID_WINE) if model == WINE else tuple(VALID_NUMERIC)
    rows: list[Row] = []
    for _ in range(draw(st.integers(1, 6))):
        row: dict[str, Any] = {}
        for feature in features:
            if draw(st.integers(0, 3)):
                row[feature] = draw(valid_cells(feature))
            else:
                row[feature] = draw(st.sampled_from(WEIRD_CELLS) | st.text(max_size=3))
        if draw(st.integers(0, 3)) == 0:
            row[EXTRA] = draw(st.sampled_from(["x", 1, None, 2.5, True, "abc", ""]))
        rows.append(row)
    return rows


def mix(verdicts: Sequence[Verdict]) -> str:
    """How an example's rows fared, for hypothesis' statistics."""
    accepted = sum(isinstance(v, Accepted) for v in verdicts)
    if accepted == len(verdicts):
        return "every row accepted"
    return "no row accepted" if accepted == 0 else "some rows accepted"


@settings(max_examples=25, deadline=None)
@given(rows=rows_for(WINE))
def test_every_door_gives_a_mixed_row_one_answer(
    project: Project, doors: Doors, rows: list[Row]
) -> None:
    """wine (numeric, boolean-valued and categorical features; imputes): one verdict per row."""
    model = project.models[WINE]
    event(mix(one_answer(send_everywhere(doors, model, rows), model, rows)))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_door_gives_a_numeric_row_one_answer(
    project: Project, doors: Doors, data: st.DataObject
) -> None:
    """forest and boosted (float32; boosted refuses missing values): one verdict per row."""
    name = data.draw(st.sampled_from([FOREST, BOOSTED]), label="model")
    rows = data.draw(rows_for(name), label="rows")
    model = project.models[name]
    event(mix(one_answer(send_everywhere(doors, model, rows), model, rows)))


# -- the issue's own examples ----------------------------------------------------------------------


def test_the_issues_examples_get_one_answer_at_every_door(project: Project, doors: Doors) -> None:
    """An empty imputable feature, 1e308 for a float32 model, unknown categories, NaN written by
    json.dumps and an extra column: each gets the same answer at every door."""
    wine = project.models[WINE]
    rows = [
        {**VALID_WINE, "proline": None},  # no missing proline in training: imputed all the same
        {**VALID_WINE, "alcohol": math.nan},  # a NaN token in JSON bodies: missing, not malformed
        {**VALID_WINE, "region": "bogus"},
        {**VALID_WINE, "region": 99},
        {**VALID_WINE, "region": 2.5},
        {**VALID_WINE, EXTRA: "ignored"},
        VALID_WINE,
    ]
    verdicts = one_answer(send_everywhere(doors, wine, rows), wine, rows)
    assert all(isinstance(v, Accepted) for v in verdicts[:2])
    for verdict, shown in zip(verdicts[2:5], ("'bogus'", "'99'", "'2.5'"), strict=True):
        assert isinstance(verdict, Rejected)
        assert verdict.reason.startswith(f"feature 'region' has an unknown category: {shown}")
    assert verdicts[5] == verdicts[6]  # each sent alone: the extra column changes nothing

    forest = project.models[FOREST]
    estimator = project.estimators[FOREST]
    rows = [{**VALID_NUMERIC, "f0": 1e308}, {**VALID_NUMERIC, "f0": 1e30}]
    verdicts = one_answer(send_everywhere(doors, forest, rows), forest, rows)
    for row, verdict in zip(rows, verdicts, strict=True):  # as the estimator itself answers
        takes = answers(estimator, model_frame(project, FOREST, row))
        assert isinstance(verdict, Accepted if takes else Rejected), (row, verdict)
    assert isinstance(verdicts[0], Rejected)
    assert "'f0'" in verdicts[0].reason
    assert "'1e+308'" in verdicts[0].reason

    boosted = project.models[BOOSTED]
    rows = [{**VALID_NUMERIC, "f1": math.nan}]
    (verdict,) = one_answer(send_everywhere(doors, boosted, rows), boosted, rows)
    assert verdict == Rejected("feature 'f1' is missing, and this model cannot fill it in")


# -- disagreements, each reduced to its smallest example -------------------------------------------


def test_a_request_refused_by_the_checker_and_the_model_names_the_first_row(
    project: Project, doors: Doors, tmp_path: Path
) -> None:
    """A row the model refuses (wine's organic=1e308) before a row the checker rejects: the
    server, like mlserve predict, finds the model's refusals among the rows the checker accepted
    before refusing the request, so both name row 0 and count one more (it once stopped at the
    checker and named row 1)."""
    wine = project.models[WINE]
    rows = [{**VALID_WINE, "organic": 1e308}, {**VALID_WINE, "organic": "abc"}]
    csv_file = write_csv(wine, rows, tmp_path / "rows.csv", ids=False)
    assert csv_file is not None
    by_predict = predict_file(doors.cli, wine, csv_file)
    assert by_predict.first_rejected is not None
    row, reason, more = by_predict.first_rejected
    assert (row, more) == (0, 1)
    assert reason.startswith("the model refused it: ")
    for door, render in HTTP_DOORS.items():
        request = render(wine, rows)
        if request is not None:
            assert ask_server(doors.client, wine, request, len(rows)) == by_predict, door


def test_an_integer_past_64_bits_is_one_value_in_json_and_csv(
    project: Project, doors: Doors
) -> None:
    """orjson reads an integer past 64 bits as a float (the category '1.8446744073709552e+19');
    JSON doors read it exactly, as text/csv does."""
    wine = project.models[WINE]
    row = {**VALID_WINE, "region": 2**64}
    in_json = single(ask_server(doors.client, wine, v1_records(wine, [row]), 1))
    csv_request = mlflow_csv(wine, [row])
    assert csv_request is not None
    in_csv = single(ask_server(doors.client, wine, csv_request, 1))
    assert in_json == in_csv


def test_a_carriage_return_in_a_text_cell_is_one_value_at_every_door(
    project: Project, doors: Doors
) -> None:
    """A cell holding a bare carriage return, quoted in CSV as RFC 4180 asks, is one cell at
    every door, batch included (unquoted, as CPython's csv writer wrote it before 3.11.9, it split
    the row in two for every CSV reader: hypothesis found it, and the harness now quotes it)."""
    wine = project.models[WINE]
    rows = [{**VALID_WINE, "proline": "\r", EXTRA: "x"}, VALID_WINE]
    verdicts = one_answer(send_everywhere(doors, wine, rows), wine, rows)
    assert isinstance(verdicts[0], Rejected)
    assert isinstance(verdicts[1], Accepted)


def test_a_null_in_nested_tensor_data_is_a_missing_value(doors: Doors) -> None:
    """A 2-D FP64 tensor's nested JSON data with a null in it is read like flat data, not
    refused as ragged."""
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64"}
    answers_ = [
        doors.client.post(f"/v2/models/{BOOSTED}/infer", json={"inputs": [{**tensor, "data": d}]})
        for d in ([0.5, -1.25, 2.0, None], [[0.5, -1.25, 2.0, None]])
    ]
    flat, nested = (a.json() for a in answers_)
    assert flat == {"error": "row 0: feature 'flag' is missing, and this model cannot fill it in"}
    assert nested == flat


def test_an_integer_past_float64_in_an_fp64_tensor_is_not_finite(
    project: Project, doors: Doors
) -> None:
    """An integer past float64 in an FP64 tensor's JSON data is infinite, as /v1 reads it (it
    once was an OverflowError and HTTP 500)."""
    boosted = project.models[BOOSTED]
    row = {**VALID_NUMERIC, "flag": 1.0}
    inputs = [json_tensor(f, [v], "FP64") for f, v in row.items()]
    inputs[0]["data"] = [10**400]  # json.dumps writes its 401 digits
    response = doors.client.post(f"/v2/models/{BOOSTED}/infer", content=dumps({"inputs": inputs}))
    in_v1 = ask_server(doors.client, boosted, v1_rows(boosted, [{**row, "f0": 10**400}]), 1)
    assert in_v1.first_rejected == (0, "feature 'f0' is not finite: 'inf'", 0)
    assert response.status_code == 400
    assert response.json() == {"error": "row 0: feature 'f0' is not finite: 'inf'"}


def test_a_row_the_model_refuses_is_named_by_the_server(
    project: Project, doors: Doors, tmp_path: Path
) -> None:
    """A row the checker accepts and the model refuses (wine's organic=1e308 scales to inf) is
    named by the server as mlserve predict names it, not refused as the whole request."""
    wine = project.models[WINE]
    rows = [{**VALID_WINE, "organic": 1e308}, VALID_WINE]
    csv_file = write_csv(wine, rows, tmp_path / "rows.csv", ids=False)
    assert csv_file is not None
    by_predict = predict_file(doors.cli, wine, csv_file)
    assert by_predict.first_rejected is not None
    assert by_predict.first_rejected[0] == 0
    assert by_predict.first_rejected[1].startswith("the model refused it: ")
    by_server = ask_server(doors.client, wine, v1_records(wine, rows), len(rows))
    assert by_server == by_predict


def test_a_number_the_checker_accepts_is_scored_without_a_warning(
    project: Project, doors: Doors, tmp_path: Path
) -> None:
    """wine (float64) takes alcohol=1e308, and its arithmetic overflows: no RuntimeWarning on
    mlserve predict's terminal (or in the server's log)."""
    wine = project.models[WINE]
    csv_file = write_csv(wine, [{**VALID_WINE, "alcohol": 1e308}], tmp_path / "rows.csv", ids=False)
    assert csv_file is not None
    answer = predict_file(doors.cli, wine, csv_file)
    assert answer.per_row is not None
    assert isinstance(answer.per_row[0], Accepted)
    assert answer.warnings == ()


def test_rows_the_model_refuses_are_refused_without_a_warning(
    project: Project, doors: Doors, tmp_path: Path
) -> None:
    """wine's organic=1e308 and -1e308 scale to both infinities, which scikit-learn's finiteness
    test sums (inf + -inf): the rows are refused, and nothing is printed about the sum."""
    wine = project.models[WINE]
    rows = [{**VALID_WINE, "organic": 1e308}, {**VALID_WINE, "organic": -1e308}]
    csv_file = write_csv(wine, rows, tmp_path / "rows.csv", ids=False)
    assert csv_file is not None
    answer = predict_file(doors.cli, wine, csv_file)
    assert answer.first_rejected is not None
    assert answer.first_rejected[0] == 0
    assert answer.first_rejected[1].startswith("the model refused it: ")
    assert answer.first_rejected[2] == 1
    assert answer.warnings == ()
    assert ask_server(doors.client, wine, v1_records(wine, rows), len(rows)) == answer


def test_a_forest_fitted_on_a_frame_scores_a_missing_value_without_a_warning(
    project: Project, doors: Doors, tmp_path: Path
) -> None:
    """A forest fitted on a DataFrame, given a missing value (which its kernel does not take),
    is handed a frame: scikit-learn does not warn "X does not have valid feature names"."""
    forest = project.models[FOREST]
    csv_file = write_csv(forest, [{**VALID_NUMERIC, "f0": None}], tmp_path / "rows.csv", ids=False)
    assert csv_file is not None
    answer = predict_file(doors.cli, forest, csv_file)
    assert answer.per_row is not None
    assert isinstance(answer.per_row[0], Accepted)
    assert answer.warnings == ()
