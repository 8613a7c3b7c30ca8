"""The rollout half of the registry: start, change, promote and roll back a model's rollout,
each in one transaction under the model's lock, each with its audit row."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlserve.errors import Conflict, InvalidInput, RolloutNotFound
from mlserve.registry.database import Database
from mlserve.registry.models import AliasRow, ModelRow, RolloutEventRow, RolloutRow, utcnow
from mlserve.registry.rollouts import (
    ACTIVE,
    PROMOTED,
    ROLLED_BACK,
    Rollout,
    RolloutAction,
    RolloutEvent,
    RolloutLimits,
    check_settings,
    describe_changes,
    describe_start,
    to_rollout,
    to_rollout_event,
    write_settings,
)
from mlserve.types import DEFAULT_ALIAS

log = logging.getLogger(__name__)

_NO_LIMITS = RolloutLimits()


class RolloutStore(Database):
    """Rollouts of registered models (`RegistryStore` is one). Thread-safe.

    One rollout per model is active at a time; servers read them all with `active_rollouts`.
    """

    def start_rollout(
        self,
        name: str,
        candidate: int,
        *,
        canary: float = 0.0,
        shadow: float = 0.0,
        sticky_header: str | None = None,
        limits: RolloutLimits = _NO_LIMITS,
        actor: str = "",
    ) -> Rollout:
        """Put version ``candidate`` beside the one ``production`` points at.

        Raises InvalidInput for a setting out of range, VersionNotFound for an unknown
        candidate, and Conflict when the model has no production alias, the candidate is
        production, or another rollout of the model is active.
        """
        check_settings(canary, shadow, sticky_header, limits)

        def begin() -> Rollout:
            with self._locked_model(name) as (session, model):
                production = session.scalar(
                    select(AliasRow.version).where(
                        AliasRow.model_id == model.id, AliasRow.alias == DEFAULT_ALIAS
                    )
                )
                if production is None:
                    raise Conflict(
                        f"model {name!r} has no {DEFAULT_ALIAS} alias to roll out against; "
                        f"set one first: mlserve alias set {name} {DEFAULT_ALIAS} VERSION"
                    )
                self._version_row(session, model, candidate)
                if candidate == production:
                    raise Conflict(
                        f"version {candidate} of {name!r} is already {DEFAULT_ALIAS}; "
                        "a rollout needs another version as its candidate"
                    )
                active = self._active_rollout_row(session, model)
                if active is not None:
                    raise Conflict(
                        f"model {name!r} already has an active rollout (candidate "
                        f"{active.candidate}); change it with `mlserve rollout set`, or end it "
                        "with `mlserve rollout promote` or `mlserve rollout rollback`"
                    )
                now = utcnow()
                row = RolloutRow(
                    model_id=model.id,
                    active_model_id=model.id,
                    production=production,
                    candidate=candidate,
                    state=ACTIVE,
                    reason="",
                    actor=actor,
                    started_at=now,
                    updated_at=now,
                )
                write_settings(row, canary, shadow, sticky_header, limits)
                session.add(row)
                session.flush()  # the row's id, for its event
                detail = describe_start(to_rollout(name, row))
                self._record_rollout_event(session, row, "start", detail, actor, now)
                session.commit()
                return to_rollout(name, row)

        rollout = self._retry(begin)
        log.info(
            "rollout started",
            extra={"model": name, "rollout": rollout.id, "candidate": rollout.candidate},
        )
        return rollout

    def update_rollout(
        self,
        name: str,
        *,
        canary: float | None = None,
        shadow: float | None = None,
        sticky_header: str | None = None,
        clear_sticky: bool = False,
        limits: RolloutLimits | None = None,
        actor: str = "",
    ) -> Rollout:
        """Change the active rollout's shares, sticky header or limits (None: unchanged).

        A change that changes nothing writes nothing. Raises RolloutNotFound when the model
        has no active rollout, InvalidInput for a setting out of range.
        """
        if clear_sticky and sticky_header is not None:
            raise InvalidInput("give a sticky header or clear it, not both")

        def change() -> Rollout:
            with self._locked_model(name) as (session, model):
                row = self._active_or_missing(session, model, name)
                before = to_rollout(name, row)
                after = replace(
                    before,
                    canary=before.canary if canary is None else canary,
                    shadow=before.shadow if shadow is None else shadow,
                    sticky_header=None
                    if clear_sticky
                    else (sticky_header if sticky_header is not None else before.sticky_header),
                    limits=before.limits if limits is None else limits,
                )
                check_settings(after.canary, after.shadow, after.sticky_header, after.limits)
                detail = describe_changes(before, after)
                if not detail:
                    return before
                now = utcnow()
                write_settings(row, after.canary, after.shadow, after.sticky_header, after.limits)
                row.updated_at = now
                self._record_rollout_event(session, row, "set", detail, actor, now)
                session.commit()
                return to_rollout(name, row)

        rollout = self._retry(change)
        log.info("rollout changed", extra={"model": name, "rollout": rollout.id})
        return rollout

    def promote_rollout(self, name: str, *, actor: str = "") -> Rollout:
        """End the active rollout by pointing ``production`` at its candidate, in one transaction.

        The alias move is recorded in the alias audit trail as `set_alias` records it. Raises
        RolloutNotFound when the model has no active rollout.
        """

        def promote() -> Rollout:
            with self._locked_model(name) as (session, model):
                row = self._active_or_missing(session, model, name)
                self._version_row(session, model, row.candidate)
                moved = self._move_alias(session, model, DEFAULT_ALIAS, row.candidate, actor)
                now = moved.at
                row.state, row.active_model_id, row.updated_at = PROMOTED, None, now
                row.reason = f"candidate {row.candidate} promoted to {DEFAULT_ALIAS}"
                detail = f"{DEFAULT_ALIAS} {moved.from_version or 'none'} -> {moved.to_version}"
                self._record_rollout_event(session, row, "promote", detail, actor, now)
                session.commit()
                return to_rollout(name, row)

        rollout = self._retry(promote)
        log.info(
            "rollout promoted",
            extra={"model": name, "rollout": rollout.id, "candidate": rollout.candidate},
        )
        return rollout

    def rollback_rollout(
        self, name: str, reason: str, *, actor: str = "", rollout_id: int | None = None
    ) -> Rollout:
        """End the active rollout without moving ``production``: traffic returns to it, since an
        ended rollout routes nothing.

        With ``rollout_id``, a rollout of the model that has already ended is returned as it
        is: several server processes may decide to roll the same rollout back, and all but
        the first find it done. Raises RolloutNotFound when there is nothing to roll back.
        """
        reason = " ".join(reason.split()) or "no reason given"  # one line in the audit trail

        def roll_back() -> Rollout:
            with self._locked_model(name) as (session, model):
                if rollout_id is None:
                    row = self._active_rollout_row(session, model)
                else:
                    row = session.scalar(
                        select(RolloutRow).where(
                            RolloutRow.id == rollout_id, RolloutRow.model_id == model.id
                        )
                    )
                    if row is not None and row.state != ACTIVE:
                        return to_rollout(name, row)
                if row is None:
                    raise RolloutNotFound(name)
                now = utcnow()
                row.state, row.active_model_id, row.updated_at = ROLLED_BACK, None, now
                row.reason = reason
                self._record_rollout_event(session, row, "rollback", reason, actor, now)
                session.commit()
                return to_rollout(name, row)

        rollout = self._retry(roll_back)
        log.info(
            "rollout rolled back",
            extra={"model": name, "rollout": rollout.id, "reason": rollout.reason},
        )
        return rollout

    def rollout(self, name: str) -> Rollout | None:
        """The model's active rollout, if any; raises ModelNotFound."""
        with self._session() as session:
            model = self._model(session, name)
            row = self._active_rollout_row(session, model)
            return None if row is None else to_rollout(name, row)

    def active_rollouts(self) -> list[Rollout]:
        """Every active rollout of every model, by model name, in one query."""
        with self._session() as session:
            rows = session.execute(
                select(RolloutRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == RolloutRow.model_id)
                .where(RolloutRow.state == ACTIVE)
                .order_by(ModelRow.name)
            )
            return [to_rollout(model_name, row) for row, model_name in rows]

    def rollouts(self, name: str) -> list[Rollout]:
        """Every rollout of a model, active or ended, newest first."""
        with self._session() as session:
            model = self._model(session, name)
            rows = session.scalars(
                select(RolloutRow)
                .where(RolloutRow.model_id == model.id)
                .order_by(RolloutRow.id.desc())
            )
            return [to_rollout(name, row) for row in rows]

    def rollout_history(self, name: str) -> list[RolloutEvent]:
        """The audit trail of a model's rollouts, oldest first."""
        with self._session() as session:
            model = self._model(session, name)
            rows = session.scalars(
                select(RolloutEventRow)
                .where(RolloutEventRow.model_id == model.id)
                .order_by(RolloutEventRow.id)
            )
            return [to_rollout_event(name, row) for row in rows]

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked_model(self, name: str) -> Iterator[tuple[Session, ModelRow]]:
        """A session holding model ``name``'s row lock until it commits or ends: every change
        to a model's rollouts runs under it. Raises ModelNotFound."""
        with self._session() as session:
            model = self._model(session, name)
            self._lock_model(session, model)
            yield session, model

    def _active_or_missing(self, session: Session, model: ModelRow, name: str) -> RolloutRow:
        """The model's active rollout; raises RolloutNotFound when there is none."""
        row = self._active_rollout_row(session, model)
        if row is None:
            raise RolloutNotFound(name)
        return row

    @staticmethod
    def _active_rollout_row(session: Session, model: ModelRow) -> RolloutRow | None:
        return session.scalar(
            select(RolloutRow).where(RolloutRow.model_id == model.id, RolloutRow.state == ACTIVE)
        )

    @staticmethod
    def _record_rollout_event(
        session: Session,
        row: RolloutRow,
        action: RolloutAction,
        detail: str,
        actor: str,
        at: datetime,
    ) -> None:
        session.add(
            RolloutEventRow(
                model_id=row.model_id,
                rollout_id=row.id,
                action=action,
                detail=detail,
                actor=actor,
                at=at,
            )
        )
