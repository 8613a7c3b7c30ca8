"""Live model updates (issue 14): `mlserve serve` follows the aliases it serves while clients
keep calling it. Under steady load on every protocol the production alias moves 20 times between
two good versions, once to a version whose artifact was corrupted on disk and once to one that
fails its warm-up: no request fails, every answer is the prediction of the version its
X-Model-Version header names, broken versions never answer, readiness never flips, and retired
versions give their memory back. Also: SIGHUP follows at once, and versions are reachable by
number (an unserved one says how to serve it)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    LiveServer,
    launch,
    register,
    registry,
    shutdown,
    wait_for_every_worker,
)
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from steady_load import PROTOCOLS, Answer, SteadyLoad, ask, oip_body

from mlserve.errors import AliasNotFound
from mlserve.monitoring import describe_features
from mlserve.runtimes import load_sklearn
from mlserve.types import Signature

MODEL = "swapped"
FEATURES = [f"x{i}" for i in range(6)]
CLASSES = np.array(["low", "mid", "high"])
LINEAR, NEIGHBORS = "1", "2"
"""The two good versions: a scaled logistic regression and a k-nearest-neighbors classifier."""
CORRUPTED = "3"
"""The neighbors model again, its file changed on disk after registration (sha256 mismatch)."""
FAILS_WARMUP = "4"
"""The logistic regression registered with a signature naming a feature it was not fitted on."""
UNSERVED = "5"
"""A good version no alias points at."""
BROKEN = (CORRUPTED, FAILS_WARMUP)

FOLLOW_QUICKLY = {"MLSERVE_RELOAD_INTERVAL_S": "0.5"}
STEP_TIMEOUT_S = 60.0
"""Bound on each wait for the server to follow one alias move."""
TRAIN_ROWS = 100_000
"""The neighbors model keeps its training rows (twice: as fitted and in its KD-tree), about
10 MB in a few large arrays: a version that outlives its retirement shows in the server's RSS,
and one that is freed gives its memory back."""
LOAD_BEFORE_MOVES = 40
"""Answers the load gets before the first move, so every move happens under load."""


@dataclass(frozen=True)
class SwapProject:
    """A project folder whose registry holds versions 1-5 of MODEL, and what each good version
    predicts (in this process, from its registered file) for every probe row."""

    root: Path
    rows: list[list[float]]
    expected: dict[str, list[str]]
    """Version -> its prediction for each row, as text."""


def classifier_signature(frame: pd.DataFrame) -> Signature:
    """The signature of a classifier of CLASSES over ``frame``'s columns."""
    return Signature(
        inputs=describe_features(frame),
        task="classification",
        outputs=("predict", "predict_proba"),
        classes=tuple(sorted(CLASSES)),
        target="label",
    )


@pytest.fixture(scope="module")
def swap_project(tmp_path_factory: pytest.TempPathFactory) -> SwapProject:
    """Versions 1 (linear) and 2 (neighbors) that disagree on many probe rows, 3 corrupted on disk,
    4 failing warm-up, 5 good but unserved; production -> 1."""
    x, y = make_classification(
        n_samples=TRAIN_ROWS + 100, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
        flip_y=0.15, random_state=3,
    )  # fmt: skip
    frame, labels = pd.DataFrame(x, columns=FEATURES), CLASSES[y]
    train, target = frame.iloc[:TRAIN_ROWS], labels[:TRAIN_ROWS]
    held_out = frame.iloc[TRAIN_ROWS:]
    linear = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    linear.fit(train, target)
    neighbors = KNeighborsClassifier(n_neighbors=7).fit(train, target)
    weak = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=0.001))])
    weak.fit(train, target)
    renamed = train.rename(columns={"x5": "x5_renamed"})
    with pytest.raises(ValueError, match="feature names"):  # version 4 really cannot predict
        linear.predict(renamed.head(1))

    disagree = linear.predict(held_out) != neighbors.predict(held_out)
    chosen = np.concatenate([np.flatnonzero(disagree)[:12], np.flatnonzero(~disagree)[:4]])
    rows = held_out.iloc[chosen].reset_index(drop=True)

    root = tmp_path_factory.mktemp("swap-project")
    staging = root / "staging"
    signature = classifier_signature(train)
    with registry(root) as store:
        numbers = [
            register(store, MODEL, linear, signature, staging / "linear"),
            register(store, MODEL, neighbors, signature, staging / "neighbors"),
            register(store, MODEL, neighbors, signature, staging / "corrupted"),
            register(store, MODEL, linear, classifier_signature(renamed), staging / "fails-warmup"),
            register(store, MODEL, weak, signature, staging / "unserved"),
        ]
        assert numbers == [LINEAR, NEIGHBORS, CORRUPTED, FAILS_WARMUP, UNSERVED]
        store.set_alias(MODEL, "production", int(LINEAR))
        expected = {}
        for number in (LINEAR, NEIGHBORS, UNSERVED):
            version = store.get_version(MODEL, int(number))
            estimator = load_sklearn(store.local_folder(version) / version.model_file, safe=False)
            expected[number] = [str(p) for p in estimator.predict(rows)]
        corrupted = store.get_version(MODEL, int(CORRUPTED))
        model_file = store.local_folder(corrupted) / corrupted.model_file
    model_file.write_bytes(model_file.read_bytes() + b"corrupted after registration")

    differing = sum(a != b for a, b in zip(expected[LINEAR], expected[NEIGHBORS], strict=True))
    assert differing >= 10, "the two good versions must disagree on many rows"
    return SwapProject(root, rows.to_numpy().tolist(), expected)


# -- following the server ------------------------------------------------------------------------


def fresh_client(server: LiveServer) -> httpx.Client:
    """A client whose every request opens its own connection (so any worker may answer)."""
    return httpx.Client(base_url=server.url, headers={"connection": "close"}, timeout=30)


def load_counts(server: LiveServer) -> Counter[str]:
    """mlserve_model_loads_total of MODEL by result (summed over workers)."""
    families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=30).text)
    counts: Counter[str] = Counter()
    for family in families:
        for sample in family.samples:
            if sample.name == "mlserve_model_loads_total" and sample.labels["model"] == MODEL:
                counts[sample.labels["result"]] += int(sample.value)
    return counts


def fail_with_log(server: LiveServer, message: str) -> None:
    """Fail the test with the end of the server's stderr, access lines left out (under load
    they would crowd out the reload and registry lines that say what went wrong)."""
    lines = [
        line for line in server.stderr().splitlines() if '"logger":"mlserve.access"' not in line
    ]
    tail = "\n".join(lines)[-6000:]
    raise AssertionError(f"{message}; loads {dict(load_counts(server))}\n--- stderr ---\n{tail}")


def wait_until_answering(
    server: LiveServer,
    project: SwapProject,
    version: str,
    probes: list[Answer],
    *,
    in_a_row: int,
    loads: int | None = None,
) -> None:
    """Poll inference until ``in_a_row`` answers in a row come from ``version`` (and, when
    given, the load counter reached ``loads``: every worker loaded it). Answers go to
    ``probes`` to be judged with the load's."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    streak, step = 0, 0
    with fresh_client(server) as client:
        while True:
            answer = ask(client, PROTOCOLS[0], MODEL, project.rows, step % len(project.rows), [])
            probes.append(answer)
            streak = streak + 1 if answer.version == version else 0
            step += 1
            if streak >= in_a_row and (loads is None or load_counts(server)["loaded"] >= loads):
                return
            if time.monotonic() > deadline:
                fail_with_log(server, f"version {version} not answering: last {answer}")
            time.sleep(0.02)


def wait_until_failed(server: LiveServer, version: str, *, failures: int) -> str:
    """Poll until the load-failure counter reaches ``failures`` and the version's metadata says
    it failed; return the reason it gives."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    with fresh_client(server) as client:
        while True:
            response = client.get(f"/v2/models/{MODEL}/versions/{version}")
            parameters = response.json().get("parameters", {}) if response.is_success else {}
            if parameters.get("state") == "failed" and load_counts(server)["failed"] >= failures:
                return str(parameters["reason"])
            if time.monotonic() > deadline:
                fail_with_log(server, f"version {version} never failed: {response.text[:300]}")
            time.sleep(0.05)


def wait_until_only(server: LiveServer, version: str) -> None:
    """Poll /v1/models (one worker) until ``version`` is the only ready version: the old one
    was retired."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        models = httpx.get(f"{server.url}/v1/models", timeout=30).json()["models"]
        ready = [m["version"] for m in models if m["state"] == "ready"]
        if ready == [version]:
            return
        if time.monotonic() > deadline:
            fail_with_log(server, f"still ready besides {version}: {models}")
        time.sleep(0.05)


def moves(good: int, broken_after: dict[int, str]) -> list[str]:
    """The alias targets: ``good`` moves alternating neighbors/linear (from linear), with a broken
    version after the good move numbered in ``broken_after``."""
    targets = []
    for number in range(1, good + 1):
        targets.append(NEIGHBORS if number % 2 else LINEAR)
        if number in broken_after:
            targets.append(broken_after[number])
    return targets


@dataclass
class SwapRun:
    """What happened while the alias moved under load."""

    answers: list[Answer]
    readiness: list[int]
    reasons: dict[str, str]
    rss_after_move: dict[int, int]
    """Good move number -> server RSS in bytes once the old version was retired (one worker)."""
    final: list[Answer] = field(default_factory=list)
    """Every protocol on fresh connections once the load stopped."""
    loads: Counter[str] = field(default_factory=Counter)
    """mlserve_model_loads_total by result at the end."""
    exit_code: int | None = None

    def __repr__(self) -> str:  # the answers are thousands: say how many, by version
        versions = Counter(a.version for a in self.answers)
        return (
            f"SwapRun({len(self.answers)} answers by version {dict(versions)}, "
            f"loads {dict(self.loads)})"
        )


def swap_under_load(
    server: LiveServer, project: SwapProject, targets: list[str], *, workers: int
) -> SwapRun:
    """Start steady load, move production through ``targets`` waiting for the server to follow
    each, stop the load; everything recorded."""
    probes: list[Answer] = []
    reasons: dict[str, str] = {}
    rss: dict[int, int] = {}
    good_moves = 0
    with (
        registry(project.root) as store,
        SteadyLoad(server.url, MODEL, project.rows, FEATURES) as load,
    ):
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while load.count() < LOAD_BEFORE_MOVES:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.05)
        for target in targets:
            store.set_alias(MODEL, "production", int(target))
            if target in BROKEN:
                reasons[target] = wait_until_failed(
                    server, target, failures=workers * (len(reasons) + 1)
                )
                continue
            good_moves += 1
            wait_until_answering(
                server,
                project,
                target,
                probes,
                in_a_row=1 if workers == 1 else 12,
                loads=workers * (1 + good_moves),
            )
            if workers == 1:
                wait_until_only(server, target)
                rss[good_moves] = psutil.Process(server.process.pid).memory_info().rss
    return SwapRun(load.answers + probes, load.readiness, reasons, rss)


def check_no_failures(run: SwapRun) -> None:
    """Zero non-2xx on any protocol (each was used), readiness 200 at every poll."""
    failed = [a for a in run.answers if not 200 <= a.status < 300]
    assert not failed, f"{len(failed)} of {len(run.answers)} requests failed, e.g. {failed[:5]}"
    assert {a.kind for a in run.answers} == {p.name for p in PROTOCOLS}
    assert run.readiness, "readiness was never polled"
    assert set(run.readiness) == {200}, Counter(run.readiness)


def check_predictions(run: SwapRun, project: SwapProject) -> None:
    """Both good versions answered, no other, and every answer is what its version predicts."""
    by_version = Counter(a.version for a in run.answers)
    assert set(by_version) == {LINEAR, NEIGHBORS}, by_version
    wrong = [a for a in run.answers if a.prediction != project.expected[str(a.version)][a.row]]
    assert not wrong, f"{len(wrong)} answers differ from their version's prediction: {wrong[:5]}"


def check_final(run: SwapRun, project: SwapProject, version: str) -> None:
    """After the last move every protocol answers with ``version`` and its predictions."""
    assert run.final
    for answer in run.final:
        assert (answer.status, answer.version) == (200, version), answer
        assert answer.prediction == project.expected[version][answer.row], answer


def check_reasons(reasons: dict[str, str]) -> None:
    """Each broken version failed for its own reason, stated in its metadata."""
    assert "sha256" in reasons[CORRUPTED], reasons
    assert "integrity" in reasons[CORRUPTED], reasons
    assert "feature names" in reasons[FAILS_WARMUP], reasons


def final_answers(server: LiveServer, project: SwapProject) -> list[Answer]:
    """Every protocol, several rows each, on fresh connections."""
    with fresh_client(server) as client:
        return [
            ask(client, protocol, MODEL, project.rows, row, FEATURES)
            for row in range(4)
            for protocol in PROTOCOLS
        ]


def run_swaps(
    project: SwapProject, targets: list[str], log_dir: Path, *args: str, workers: int
) -> SwapRun:
    """Serve MODEL (production -> linear) and move its alias through ``targets`` under load;
    the server is stopped when this returns."""
    reset_aliases(project)
    with serving(project, MODEL, *args, env=FOLLOW_QUICKLY, log_dir=log_dir) as server:
        run = swap_under_load(server, project, targets, workers=workers)
        run.final = final_answers(server, project)
        run.loads = load_counts(server)
        run.exit_code = server.stop()
    return run


def reset_aliases(project: SwapProject) -> None:
    """production -> linear, no staging: where every test starts."""
    with registry(project.root) as store:
        store.set_alias(MODEL, "production", int(LINEAR))
        with contextlib.suppress(AliasNotFound):
            store.delete_alias(MODEL, "staging")


@contextlib.contextmanager
def serving(
    project: SwapProject, *args: str, env: dict[str, str], log_dir: Path
) -> Iterator[LiveServer]:
    """`mlserve serve ARGS` in the project, ready (every worker, when several), stopped after."""
    server = launch(project.root, *args, env=env, log_dir=log_dir)
    try:
        if "--workers" in args:
            wait_for_every_worker(server)
        else:
            server.wait_ready()
        yield server
    finally:
        shutdown(server)


# -- twenty moves under load, one worker -----------------------------------------------------------

GOOD_MOVES = 20
SCHEDULE = moves(GOOD_MOVES, broken_after={7: CORRUPTED, 14: FAILS_WARMUP})
"""20 good moves, to the corrupted version after the 7th and to the one failing warm-up after
the 14th; the last good one goes to linear."""


@pytest.fixture(scope="module")
def twenty_moves(swap_project: SwapProject, tmp_path_factory: pytest.TempPathFactory) -> SwapRun:
    """One server under steady load while production moves through SCHEDULE."""
    return run_swaps(swap_project, SCHEDULE, tmp_path_factory.mktemp("twenty-moves"), workers=1)


def test_no_request_fails_and_readiness_holds_while_the_alias_moves(
    twenty_moves: SwapRun,
) -> None:
    check_no_failures(twenty_moves)
    assert twenty_moves.exit_code == 0


def test_every_answer_is_the_prediction_of_the_version_it_names(
    twenty_moves: SwapRun, swap_project: SwapProject
) -> None:
    check_predictions(twenty_moves, swap_project)


def test_broken_versions_never_answer_and_say_why_they_failed(twenty_moves: SwapRun) -> None:
    assert not {a.version for a in twenty_moves.answers} & set(BROKEN)
    check_reasons(twenty_moves.reasons)
    # every good move loaded its version once, each broken one failed once
    assert twenty_moves.loads == Counter(loaded=1 + GOOD_MOVES, failed=2)


def test_the_server_ends_on_the_last_good_version(
    twenty_moves: SwapRun, swap_project: SwapProject
) -> None:
    check_final(twenty_moves, swap_project, LINEAR)


def test_retired_versions_give_their_memory_back(twenty_moves: SwapRun) -> None:
    rss = twenty_moves.rss_after_move
    first, last = rss[1], rss[GOOD_MOVES]
    assert abs(last - first) <= first // 10, sorted((k, v >> 20) for k, v in rss.items())


# -- two workers ---------------------------------------------------------------------------------


def test_two_workers_follow_alias_moves_under_load_without_failing_a_request(
    swap_project: SwapProject, tmp_path: Path
) -> None:
    run = run_swaps(swap_project, SCHEDULE, tmp_path, "--workers", "2", workers=2)
    check_no_failures(run)
    check_predictions(run, swap_project)
    check_reasons(run.reasons)
    check_final(run, swap_project, LINEAR)
    # each worker loaded every good version once and failed on each broken one once
    assert run.loads == Counter(loaded=2 * (1 + GOOD_MOVES), failed=4)
    assert run.exit_code == 0


# -- SIGHUP and versions by number ---------------------------------------------------------------


def test_sighup_follows_the_alias_at_once_when_polling_is_off(
    swap_project: SwapProject, tmp_path: Path
) -> None:
    reset_aliases(swap_project)
    env = {"MLSERVE_RELOAD_INTERVAL_S": "0"}
    probes: list[Answer] = []
    with (
        serving(swap_project, MODEL, env=env, log_dir=tmp_path) as server,
        registry(swap_project.root) as store,
        fresh_client(server) as client,
    ):
        store.set_alias(MODEL, "production", int(NEIGHBORS))
        for step in range(20):  # no polling: the move goes unnoticed
            protocol, row = PROTOCOLS[step % len(PROTOCOLS)], step % len(swap_project.rows)
            answer = ask(client, protocol, MODEL, swap_project.rows, row, FEATURES)
            assert (answer.status, answer.version) == (200, LINEAR), answer
            time.sleep(0.05)
        assert load_counts(server) == Counter(loaded=1)

        os.kill(server.process.pid, signal.SIGHUP)
        wait_until_answering(server, swap_project, NEIGHBORS, probes, in_a_row=1)
        wait_until_only(server, NEIGHBORS)

        store.set_alias(MODEL, "production", int(FAILS_WARMUP))
        os.kill(server.process.pid, signal.SIGHUP)
        reason = wait_until_failed(server, FAILS_WARMUP, failures=1)
        assert "feature names" in reason
        answer = ask(client, PROTOCOLS[0], MODEL, swap_project.rows, 0, FEATURES)
        assert (answer.status, answer.version) == (200, NEIGHBORS), answer
        assert all(p.status == 200 and p.version in (LINEAR, NEIGHBORS) for p in probes), probes
        assert server.stop() == 0


def test_every_followed_alias_is_served_by_number_and_an_unserved_version_says_how_to_serve_it(
    swap_project: SwapProject, tmp_path: Path
) -> None:
    reset_aliases(swap_project)
    with registry(swap_project.root) as store:
        store.set_alias(MODEL, "staging", int(NEIGHBORS))
    env = {"MLSERVE_RELOAD_INTERVAL_S": "0"}
    with (
        serving(swap_project, MODEL, f"{MODEL}@staging", env=env, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get(f"/v2/models/{MODEL}").json()["versions"] == [LINEAR, NEIGHBORS]
        # the bare name answers with production; each followed version by its number
        for path, version in [
            (f"/v2/models/{MODEL}/infer", LINEAR),
            (f"/v2/models/{MODEL}/versions/{LINEAR}/infer", LINEAR),
            (f"/v2/models/{MODEL}/versions/{NEIGHBORS}/infer", NEIGHBORS),
        ]:
            for row, values in enumerate(swap_project.rows):
                response = client.post(path, json=oip_body(values))
                assert response.status_code == 200, response.text
                assert response.headers["x-model-version"] == version
                predicted = response.json()["outputs"][0]["data"][0]
                assert predicted == swap_project.expected[version][row], (path, row)
        staging = client.post(
            f"/v1/models/{MODEL}/versions/{NEIGHBORS}:predict",
            json={"instances": [swap_project.rows[0]]},
        )
        assert staging.status_code == 200, staging.text
        assert staging.json()["predictions"] == [swap_project.expected[NEIGHBORS][0]]

        body = oip_body(swap_project.rows[0])
        unserved = [
            client.get(f"/v2/models/{MODEL}/versions/{UNSERVED}"),
            client.get(f"/v2/models/{MODEL}/versions/{UNSERVED}/ready"),
            client.post(f"/v2/models/{MODEL}/versions/{UNSERVED}/infer", json=body),
            client.post(
                f"/v1/models/{MODEL}/versions/{UNSERVED}:predict",
                json={"instances": [swap_project.rows[0]]},
            ),
        ]
        for response in unserved:
            assert response.status_code == 404, response.text
            error = response.json()["error"]
            assert f"{MODEL}:{UNSERVED} is registered but this server does not serve it" in error
            assert f"mlserve alias set {MODEL} staging {UNSERVED}" in error
            assert "x-model-version" not in response.headers

        unknown = client.post(f"/v2/models/{MODEL}/versions/99/infer", json=body)
        assert unknown.status_code == 404, unknown.text
        assert "is registered" not in unknown.json()["error"]
