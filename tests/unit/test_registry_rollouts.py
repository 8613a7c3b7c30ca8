"""RegistryStore rollouts: start, change, promote and roll back, every refusal, the audit trail."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.errors import (
    Conflict,
    InvalidInput,
    ModelNotFound,
    RolloutNotFound,
    VersionNotFound,
)
from mlserve.registry import NewVersion, RegistryStore, RolloutLimits
from mlserve.registry.rollouts import check_settings


@pytest.fixture
def churn(registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion) -> str:
    """Model ``churn`` with versions 1..3 in ``registry_store``, production at 1."""
    for _ in range(3):
        registry_store.register_version("churn", classifier_file, new_version)
    registry_store.set_alias("churn", "production", 1, actor="alice")
    return "churn"


LIMITS = RolloutLimits(max_error_rate=0.02, max_p99_ratio=2.0, window_s=60.0, min_requests=50)


# -- starting -----------------------------------------------------------------------------------


def test_start_records_the_rollout_and_its_audit_line(
    registry_store: RegistryStore, churn: str
) -> None:
    before = datetime.now(UTC)
    rollout = registry_store.start_rollout(
        churn,
        3,
        canary=10,
        shadow=100,
        sticky_header="X-User-Id",
        limits=LIMITS,
        actor="bob",
    )
    assert (rollout.name, rollout.production, rollout.candidate) == ("churn", 1, 3)
    assert (rollout.canary, rollout.shadow, rollout.sticky_header) == (10.0, 100.0, "X-User-Id")
    assert rollout.limits == LIMITS
    assert (rollout.state, rollout.reason, rollout.actor) == ("active", "", "bob")
    assert rollout.is_active
    assert before <= rollout.started_at == rollout.updated_at <= datetime.now(UTC)
    assert registry_store.rollout(churn) == rollout
    assert registry_store.rollouts(churn) == [rollout]
    (event,) = registry_store.rollout_history(churn)
    assert (event.name, event.rollout_id, event.action, event.actor) == (
        "churn",
        rollout.id,
        "start",
        "bob",
    )
    assert event.detail == (
        "candidate 3 beside production 1, canary 10%, shadow 100%, sticky header X-User-Id, "
        "max error rate 2%, max p99 ratio 2x over 60 s (min 50 requests)"
    )


def test_start_defaults_route_nothing_and_set_no_limits(
    registry_store: RegistryStore, churn: str
) -> None:
    rollout = registry_store.start_rollout(churn, 2)
    assert (rollout.canary, rollout.shadow, rollout.sticky_header) == (0.0, 0.0, None)
    assert rollout.limits == RolloutLimits()
    assert registry_store.rollout_history(churn)[0].detail.endswith("shadow 0%, no limits")


def test_start_without_a_production_alias_says_to_set_one(
    registry_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    registry_store.register_version("fraud", classifier_file, new_version)
    registry_store.register_version("fraud", classifier_file, new_version)
    with pytest.raises(Conflict, match=r"no production alias.*mlserve alias set fraud production"):
        registry_store.start_rollout("fraud", 2)
    assert registry_store.rollouts("fraud") == []


def test_start_refuses_an_unknown_model_or_candidate(
    registry_store: RegistryStore, churn: str
) -> None:
    with pytest.raises(ModelNotFound):
        registry_store.start_rollout("nope", 2)
    with pytest.raises(VersionNotFound, match="no version 9"):
        registry_store.start_rollout(churn, 9)
    assert registry_store.rollout_history(churn) == []


def test_start_refuses_production_as_its_own_candidate(
    registry_store: RegistryStore, churn: str
) -> None:
    with pytest.raises(Conflict, match="already production"):
        registry_store.start_rollout(churn, 1)


def test_a_second_active_rollout_is_refused_naming_the_commands(
    registry_store: RegistryStore, churn: str
) -> None:
    registry_store.start_rollout(churn, 2, canary=5)
    with pytest.raises(Conflict, match=r"rollout set.*rollout promote.*rollout rollback"):
        registry_store.start_rollout(churn, 3)
    assert [r.candidate for r in registry_store.rollouts(churn)] == [2]


def test_concurrent_starts_leave_one_active_rollout(
    registry_store: RegistryStore, churn: str
) -> None:
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def starter(candidate: int) -> None:
        start.wait()
        try:
            registry_store.start_rollout(churn, candidate)
            outcomes.append("started")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=starter, args=(2 + w % 2,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "started"]
    assert len(registry_store.active_rollouts()) == 1


# -- settings are checked -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"canary": -1}, "canary must be a percentage"),
        ({"canary": 100.5}, "canary must be a percentage"),
        ({"canary": math.nan}, "canary"),
        ({"shadow": 101}, "shadow must be a percentage"),
        ({"sticky_header": "user id"}, "not a valid HTTP header name"),
        ({"sticky_header": ""}, "not a valid HTTP header name"),
        ({"sticky_header": "x-user:"}, "not a valid HTTP header name"),
        ({"limits": RolloutLimits(max_error_rate=2.0)}, "max error rate"),
        ({"limits": RolloutLimits(max_error_rate=-0.1)}, "max error rate"),
        ({"limits": RolloutLimits(max_p99_ratio=0)}, "max p99 ratio"),
        ({"limits": RolloutLimits(max_p99_ratio=math.inf)}, "max p99 ratio"),
        ({"limits": RolloutLimits(window_s=0)}, "window"),
        ({"limits": RolloutLimits(min_requests=0)}, "min requests"),
    ],
)
def test_start_refuses_settings_out_of_range_naming_them(
    registry_store: RegistryStore, churn: str, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry_store.start_rollout(churn, 2, **settings)  # type: ignore[arg-type]  # mixed kwargs
    assert registry_store.rollouts(churn) == []


finite = st.floats(allow_nan=True, allow_infinity=True)


@given(canary=finite, shadow=finite)
def test_shares_are_accepted_exactly_when_percentages(canary: float, shadow: float) -> None:
    valid = 0 <= canary <= 100 and 0 <= shadow <= 100
    try:
        check_settings(canary, shadow, None, RolloutLimits())
    except InvalidInput:
        assert not valid
    else:
        assert valid


@given(
    rate=st.none() | finite,
    ratio=st.none() | finite,
    window=finite,
    count=st.integers(min_value=-5, max_value=10**9),
)
def test_limits_are_accepted_exactly_when_in_range(
    rate: float | None, ratio: float | None, window: float, count: int
) -> None:
    valid = (
        (rate is None or 0 <= rate <= 1)
        and (ratio is None or 0 < ratio < math.inf)
        and 0 < window < math.inf
        and count >= 1
    )
    limits = RolloutLimits(rate, ratio, window, count)
    try:
        check_settings(0, 0, None, limits)
    except InvalidInput:
        assert not valid
    else:
        assert valid


@given(header=st.text(max_size=140))
def test_sticky_headers_are_http_tokens(header: str) -> None:
    token = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    valid = 0 < len(header) <= 128 and set(header) <= token
    try:
        check_settings(0, 0, header, RolloutLimits())
    except InvalidInput:
        assert not valid
    else:
        assert valid


# -- changing -----------------------------------------------------------------------------------


def test_set_changes_only_what_it_is_given_and_records_it(
    registry_store: RegistryStore, churn: str
) -> None:
    started = registry_store.start_rollout(churn, 2, canary=10, sticky_header="x-user")
    changed = registry_store.update_rollout(churn, canary=50, actor="carol")
    assert (changed.id, changed.canary, changed.shadow) == (started.id, 50.0, 0.0)
    assert changed.sticky_header == "x-user"
    assert changed.updated_at > started.updated_at
    assert registry_store.rollout(churn) == changed
    event = registry_store.rollout_history(churn)[-1]
    assert (event.action, event.detail, event.actor) == ("set", "canary 10% -> 50%", "carol")


def test_set_clears_the_sticky_header_and_replaces_limits(
    registry_store: RegistryStore, churn: str
) -> None:
    registry_store.start_rollout(churn, 2, sticky_header="x-user")
    changed = registry_store.update_rollout(
        churn, shadow=25, clear_sticky=True, limits=RolloutLimits(max_error_rate=0.05)
    )
    assert (changed.shadow, changed.sticky_header) == (25.0, None)
    assert changed.limits == RolloutLimits(max_error_rate=0.05)
    assert registry_store.rollout_history(churn)[-1].detail == (
        "shadow 0% -> 25%, sticky header x-user -> none, limits no limits -> "
        "max error rate 5% over 300 s (min 100 requests)"
    )


def test_set_that_changes_nothing_writes_nothing(registry_store: RegistryStore, churn: str) -> None:
    started = registry_store.start_rollout(churn, 2, canary=10)
    assert registry_store.update_rollout(churn, canary=10) == started
    assert len(registry_store.rollout_history(churn)) == 1


def test_set_refusals(registry_store: RegistryStore, churn: str) -> None:
    with pytest.raises(RolloutNotFound, match="model 'churn' has no active rollout"):
        registry_store.update_rollout(churn, canary=5)
    registry_store.start_rollout(churn, 2, canary=10)
    with pytest.raises(InvalidInput, match="canary"):
        registry_store.update_rollout(churn, canary=150)
    with pytest.raises(InvalidInput, match="not both"):
        registry_store.update_rollout(churn, sticky_header="x-a", clear_sticky=True)
    assert registry_store.rollout(churn).canary == 10.0  # type: ignore[union-attr]  # started above


# -- promoting ----------------------------------------------------------------------------------


def test_promote_moves_production_and_ends_the_rollout_in_one_step(
    registry_store: RegistryStore, churn: str
) -> None:
    started = registry_store.start_rollout(churn, 3, canary=50)
    promoted = registry_store.promote_rollout(churn, actor="dave")
    assert (promoted.id, promoted.state) == (started.id, "promoted")
    assert promoted.reason == "candidate 3 promoted to production"
    assert registry_store.resolve("churn@production").version == 3
    assert registry_store.rollout(churn) is None
    assert registry_store.active_rollouts() == []
    alias_event = registry_store.alias_history(churn)[-1]
    assert (alias_event.alias, alias_event.from_version, alias_event.to_version) == (
        "production",
        1,
        3,
    )
    assert alias_event.actor == "dave"
    event = registry_store.rollout_history(churn)[-1]
    assert (event.action, event.detail, event.actor) == ("promote", "production 1 -> 3", "dave")
    # The model is free for its next rollout, against the new production.
    assert registry_store.start_rollout(churn, 2).production == 3


def test_promote_without_an_active_rollout_changes_nothing(
    registry_store: RegistryStore, churn: str
) -> None:
    with pytest.raises(RolloutNotFound):
        registry_store.promote_rollout(churn)
    assert len(registry_store.alias_history(churn)) == 1


# -- rolling back -------------------------------------------------------------------------------


def test_rollback_ends_the_rollout_and_keeps_production(
    registry_store: RegistryStore, churn: str
) -> None:
    started = registry_store.start_rollout(churn, 2, canary=10)
    ended = registry_store.rollback_rollout(
        churn, "error rate 5.0% > 2.0%\nover 140 requests", actor="server"
    )
    assert (ended.id, ended.state) == (started.id, "rolled_back")
    assert ended.reason == "error rate 5.0% > 2.0% over 140 requests"
    assert registry_store.resolve("churn@production").version == 1
    assert registry_store.rollout(churn) is None
    assert len(registry_store.alias_history(churn)) == 1
    event = registry_store.rollout_history(churn)[-1]
    assert (event.action, event.detail, event.actor) == ("rollback", ended.reason, "server")
    with pytest.raises(RolloutNotFound):
        registry_store.rollback_rollout(churn, "again")


def test_rollback_by_id_of_an_ended_rollout_returns_it(
    registry_store: RegistryStore, churn: str
) -> None:
    started = registry_store.start_rollout(churn, 2)
    first = registry_store.rollback_rollout(churn, "too slow", rollout_id=started.id)
    again = registry_store.rollback_rollout(churn, "too many errors", rollout_id=started.id)
    assert again == first
    assert again.reason == "too slow"
    assert [e.action for e in registry_store.rollout_history(churn)] == ["start", "rollback"]
    # A newer rollout is not the one that was meant: it stays active.
    newer = registry_store.start_rollout(churn, 3)
    assert registry_store.rollback_rollout(churn, "late", rollout_id=started.id) == first
    assert registry_store.rollout(churn) == newer
    with pytest.raises(RolloutNotFound):
        registry_store.rollback_rollout(churn, "unknown", rollout_id=newer.id + 100)


def test_concurrent_rollbacks_by_id_are_idempotent(
    registry_store: RegistryStore, churn: str
) -> None:
    started = registry_store.start_rollout(churn, 2, canary=10)
    start = threading.Barrier(4)
    results: list[object] = []

    def worker(number: int) -> None:
        start.wait()
        try:
            results.append(
                registry_store.rollback_rollout(
                    churn, f"worker {number}", actor=f"w{number}", rollout_id=started.id
                )
            )
        except BaseException as exc:  # surfaced by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    events = registry_store.rollout_history(churn)
    assert [e.action for e in events] == ["start", "rollback"]
    assert events[-1].detail == results[0].reason  # type: ignore[attr-defined]  # a Rollout


# -- reading ------------------------------------------------------------------------------------


def test_active_rollouts_lists_every_model_by_name(
    registry_store: RegistryStore, churn: str, classifier_file: Path, new_version: NewVersion
) -> None:
    for _ in range(2):
        registry_store.register_version("alpha", classifier_file, new_version)
    registry_store.set_alias("alpha", "production", 2)
    assert registry_store.active_rollouts() == []
    churn_rollout = registry_store.start_rollout(churn, 2)
    alpha_rollout = registry_store.start_rollout("alpha", 1, canary=100)
    assert registry_store.active_rollouts() == [alpha_rollout, churn_rollout]
    registry_store.rollback_rollout("alpha", "test")
    assert registry_store.active_rollouts() == [churn_rollout]


def test_rollouts_are_listed_newest_first_and_history_oldest_first(
    registry_store: RegistryStore, churn: str
) -> None:
    first = registry_store.start_rollout(churn, 2)
    registry_store.rollback_rollout(churn, "no")
    second = registry_store.start_rollout(churn, 3)
    registry_store.promote_rollout(churn)
    assert [r.id for r in registry_store.rollouts(churn)] == [second.id, first.id]
    assert [(e.rollout_id, e.action) for e in registry_store.rollout_history(churn)] == [
        (first.id, "start"),
        (first.id, "rollback"),
        (second.id, "start"),
        (second.id, "promote"),
    ]


def test_reading_rollouts_of_an_unknown_model_raises(registry_store: RegistryStore) -> None:
    with pytest.raises(ModelNotFound):
        registry_store.rollout("nope")
    with pytest.raises(ModelNotFound):
        registry_store.rollout_history("nope")
