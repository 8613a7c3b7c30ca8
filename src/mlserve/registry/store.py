"""RegistryStore: models, versions, aliases and training runs on any SQLAlchemy database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlserve import __version__
from mlserve.errors import AliasNotFound, Conflict, InvalidInput, VersionNotFound
from mlserve.registry.artifacts import ArtifactStore
from mlserve.registry.database import ARCHIVED, READY
from mlserve.registry.models import (
    AliasEventRow,
    AliasRow,
    ModelRow,
    RolloutRow,
    TrainingRunRow,
    VersionEventRow,
    VersionRow,
    utcnow,
)
from mlserve.registry.rollout_store import RolloutStore
from mlserve.types import (
    DEFAULT_ALIAS,
    ModelRef,
    Signature,
    VersionManifest,
    check_name,
    file_sha256,
    verify_artifact,
)

log = logging.getLogger(__name__)

_PENDING = "pending"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered version, as read from the registry."""

    name: str
    version: int
    framework: str
    artifact_uri: str
    model_file: str
    sha256: str
    signature: Signature
    created_at: datetime
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    data_fingerprint: str | None = None
    reference_profile: dict[str, Any] | None = None
    created_by: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> ModelRef:
        """The exact reference of this version (``name:version``)."""
        return ModelRef(self.name, self.version)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model with its latest version and aliases."""

    name: str
    description: str
    created_at: datetime
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias: None as from/to means created/deleted."""

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class VersionEvent:
    """A version archived or deleted: by whom, when and why."""

    name: str
    version: int
    action: str
    reason: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """A recorded training run."""

    id: int
    name: str
    version: int | None
    estimator: str
    task: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    data_path: str
    data_fingerprint: str | None
    rows_train: int
    rows_test: int
    duration_s: float
    git_commit: str | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What registering a version needs besides the model file."""

    framework: str
    signature: Signature
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    data_fingerprint: str | None = None
    reference_profile: dict[str, Any] | None = None


class RegistryStore(RolloutStore):
    """The model registry. Thread-safe; each call runs in its own short transaction.

    Versions, aliases and training runs are here; rollouts in `RolloutStore`, the database
    helpers in `Database`. Raises ModelNotFound, VersionNotFound, AliasNotFound,
    InvalidReference and ArtifactError.
    """

    def __init__(self, database_url: str, artifact_root: str, cache_dir: Path) -> None:
        super().__init__(database_url)
        self.artifacts = ArtifactStore(artifact_root, cache_dir)

    # -- versions -------------------------------------------------------------------------------

    def register_version(
        self, name: str, model_path: Path, new: NewVersion, *, actor: str = ""
    ) -> ModelVersion:
        """Store a model file as the next version of ``name`` (created if new).

        Concurrent registrations get distinct numbers: the counter row is bumped by an UPDATE,
        which serializes writers on every database. The version is written as pending, its
        artifacts are uploaded, then it is marked ready; a failed upload removes it again.
        A missing bucket or an unreachable store raises ArtifactError before a number is taken.
        """
        check_name(name)
        if not model_path.is_file():
            raise InvalidInput(f"model file {model_path} does not exist")
        self.artifacts.check()
        sha256 = file_sha256(model_path)
        model_id = self._retry(lambda: self._get_or_create_model(name))
        version = self._retry(
            lambda: self._reserve_version(model_id, name, model_path, new, actor, sha256)
        )
        manifest = VersionManifest(
            name=name,
            version=version,
            framework=new.framework,
            model_file=model_path.name,
            sha256=sha256,
            signature=new.signature,
            created_at=utcnow().isoformat(),
            metrics=new.metrics,
            params=new.params,
            tags=new.tags,
            description=new.description,
            data_fingerprint=new.data_fingerprint,
            reference_profile=new.reference_profile,
            mlserve_version=__version__,
        )
        uri = self.artifacts.version_uri(name, version)
        try:
            self.artifacts.put_version(model_path, manifest)
        except BaseException:
            self.artifacts.delete_version(uri)
            self._retry(lambda: self._delete_pending(model_id, version))
            raise
        self._retry(lambda: self._mark_ready(model_id, version))
        log.info("version registered", extra={"model": name, "version": version})
        return self.get_version(name, version)

    def _get_or_create_model(self, name: str) -> int:
        with self._session() as session:
            row = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if row is not None:
                return row.id
            row = ModelRow(name=name, description="", last_version=0)
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another process created it a moment ago
                session.rollback()
                return session.scalars(select(ModelRow.id).where(ModelRow.name == name)).one()
            return row.id

    def _reserve_version(
        self, model_id: int, name: str, model_path: Path, new: NewVersion, actor: str, sha256: str
    ) -> int:
        with self._session() as session:
            # Writing first takes the write lock (SQLite) or the row lock (PostgreSQL) at once.
            session.execute(
                update(ModelRow)
                .where(ModelRow.id == model_id)
                .values(last_version=ModelRow.last_version + 1)
            )
            version = session.scalars(
                select(ModelRow.last_version).where(ModelRow.id == model_id)
            ).one()
            session.add(
                VersionRow(
                    model_id=model_id,
                    version=version,
                    status=_PENDING,
                    framework=new.framework,
                    artifact_uri=self.artifacts.version_uri(name, version),
                    model_file=model_path.name,
                    sha256=sha256,
                    signature=new.signature.to_dict(),
                    metrics=new.metrics,
                    params=new.params,
                    tags=new.tags,
                    description=new.description,
                    data_fingerprint=new.data_fingerprint,
                    reference_profile=new.reference_profile,
                    created_by=actor,
                )
            )
            session.commit()
            return int(version)

    def _mark_ready(self, model_id: int, version: int) -> None:
        with self._session() as session:
            session.execute(
                update(VersionRow)
                .where(VersionRow.model_id == model_id, VersionRow.version == version)
                .values(status=READY)
            )
            session.commit()

    def _delete_pending(self, model_id: int, version: int) -> None:
        with self._session() as session:
            row = session.scalar(
                select(VersionRow).where(
                    VersionRow.model_id == model_id, VersionRow.version == version
                )
            )
            if row is not None:
                session.delete(row)
                session.commit()

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version; raises ModelNotFound or VersionNotFound."""
        with self._session() as session:
            model = self._model(session, name)
            row = self._version_row(session, model, version)
            return self._to_version(session, model, row)

    def resolve(self, ref: ModelRef | str) -> ModelVersion:
        """Resolve ``name``, ``name:3`` or ``name@alias`` to a version.

        A bare name means the ``production`` alias when it is set, else the latest version.
        """
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self._session() as session:
            model = self._model(session, ref.name)
            if ref.version is not None:
                row = self._version_row(session, model, ref.version)
            elif ref.alias is not None:
                row = self._alias_target(session, model, ref.alias)
            else:
                alias = session.scalar(
                    select(AliasRow).where(
                        AliasRow.model_id == model.id, AliasRow.alias == DEFAULT_ALIAS
                    )
                )
                if alias is not None:
                    row = self._version_row(session, model, alias.version)
                else:
                    row = self._latest_row(session, model)
            return self._to_version(session, model, row)

    def list_models(self) -> list[ModelInfo]:
        """Every model, by name."""
        with self._session() as session:
            infos = []
            for model in session.scalars(select(ModelRow).order_by(ModelRow.name)):
                versions = list(
                    session.scalars(
                        select(VersionRow.version).where(
                            VersionRow.model_id == model.id, VersionRow.status == READY
                        )
                    )
                )
                aliases = {
                    a.alias: a.version
                    for a in session.scalars(
                        select(AliasRow)
                        .where(AliasRow.model_id == model.id)
                        .order_by(AliasRow.alias)
                    )
                }
                infos.append(
                    ModelInfo(
                        name=model.name,
                        description=model.description,
                        created_at=model.created_at,
                        latest_version=max(versions) if versions else None,
                        version_count=len(versions),
                        aliases=aliases,
                    )
                )
            return infos

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every ready version of a model, oldest first."""
        with self._session() as session:
            model = self._model(session, name)
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model.id, VersionRow.status == READY)
                .order_by(VersionRow.version)
            )
            return [self._to_version(session, model, row) for row in rows]

    def local_folder(self, version: ModelVersion) -> Path:
        """A local folder with the version's files, verified against the registered sha256.

        Raises ArtifactIntegrityError when the file was changed after registration.
        """
        folder = self.artifacts.local_folder(
            version.artifact_uri, version.model_file, version.sha256
        )
        verify_artifact(folder, expected_sha256=version.sha256)
        return folder

    def archive_version(
        self, name: str, version: int, *, actor: str = "", reason: str = ""
    ) -> VersionEvent:
        """Take a version out of use: it keeps its artifacts and history, but is never resolved,
        aliased or served again. Refused (Conflict) while an alias or a rollout uses it."""

        def archive() -> VersionEvent:
            with self._session() as session:
                model = self._model(session, name)
                self._lock_model(session, model)
                row = self._version_row(session, model, version)
                self._refuse_if_in_use(session, model, version, "archived")
                row.status = ARCHIVED
                event_row = self._record_version_event(
                    session, model, version, "archive", reason, actor
                )
                session.commit()
                return _to_version_event(name, event_row)

        event_ = self._retry(archive)
        log.info("version archived", extra={"model": name, "version": version, "actor": actor})
        return event_

    def delete_version(self, name: str, version: int, *, actor: str = "") -> VersionEvent:
        """Delete a version that was never served (no alias ever pointed at it, no rollout used
        it): its row and artifacts go, its number is not reused, the deletion is recorded.
        A version that was served is archived instead (Conflict says so)."""

        def delete() -> tuple[VersionEvent, str]:
            with self._session() as session:
                model = self._model(session, name)
                self._lock_model(session, model)
                row = session.scalar(
                    select(VersionRow).where(
                        VersionRow.model_id == model.id,
                        VersionRow.version == version,
                        VersionRow.status.in_((READY, ARCHIVED)),
                    )
                )
                if row is None:
                    raise VersionNotFound(name, version)
                served = self._served_by(session, model, version)
                if served is not None:
                    raise Conflict(
                        f"{name}:{version} cannot be deleted: it was served ({served}); "
                        f"archive it instead: mlserve models archive {name}:{version}"
                    )
                uri = row.artifact_uri
                session.delete(row)
                event_row = self._record_version_event(session, model, version, "delete", "", actor)
                session.commit()
                return _to_version_event(name, event_row), uri

        event_, uri = self._retry(delete)
        self.artifacts.delete_version(uri)
        log.info("version deleted", extra={"model": name, "version": version, "actor": actor})
        return event_

    def version_events(self, name: str) -> list[VersionEvent]:
        """The archive and delete trail of a model's versions, oldest first."""
        with self._session() as session:
            model = self._model(session, name)
            rows = session.scalars(
                select(VersionEventRow)
                .where(VersionEventRow.model_id == model.id)
                .order_by(VersionEventRow.id)
            )
            return [_to_version_event(name, row) for row in rows]

    def _refuse_if_in_use(self, session: Session, model: ModelRow, version: int, what: str) -> None:
        aliases = sorted(
            session.scalars(
                select(AliasRow.alias).where(
                    AliasRow.model_id == model.id, AliasRow.version == version
                )
            )
        )
        if aliases:
            raise Conflict(
                f"{model.name}:{version} cannot be {what}: alias {', '.join(aliases)} points at "
                "it; move or delete the alias first"
            )
        rollout = self._active_rollout_row(session, model)
        if rollout is not None and version in (rollout.production, rollout.candidate):
            raise Conflict(
                f"{model.name}:{version} cannot be {what}: the active rollout uses it; "
                "promote or roll it back first"
            )

    @staticmethod
    def _served_by(session: Session, model: ModelRow, version: int) -> str | None:
        """How a version was served (an alias that pointed at it, a rollout), or None."""
        alias = session.scalar(
            select(AliasEventRow.alias).where(
                AliasEventRow.model_id == model.id, AliasEventRow.to_version == version
            )
        )
        if alias is not None:
            return f"alias {alias} pointed at it"
        rollout = session.scalar(
            select(RolloutRow.id).where(
                RolloutRow.model_id == model.id,
                (RolloutRow.candidate == version) | (RolloutRow.production == version),
            )
        )
        return None if rollout is None else f"rollout {rollout} used it"

    @staticmethod
    def _record_version_event(
        session: Session, model: ModelRow, version: int, action: str, reason: str, actor: str
    ) -> VersionEventRow:
        row = VersionEventRow(
            model_id=model.id,
            version=version,
            action=action,
            reason=reason,
            actor=actor,
            at=utcnow(),
        )
        session.add(row)
        return row

    # -- aliases --------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, actor: str = "") -> AliasEvent:
        """Point ``alias`` at ``version`` atomically and record who moved it."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise Conflict(f"alias {alias!r} would be confused with a version number")

        def move() -> AliasEvent:
            with self._session() as session:
                model = self._model(session, name)
                self._lock_model(session, model)
                self._version_row(session, model, version)
                event_row = self._move_alias(session, model, alias, version, actor)
                session.commit()
                return _to_event(name, event_row)

        event_ = self._retry(move)
        log.info(
            "alias moved",
            extra={"model": name, "alias": alias, "from": event_.from_version, "to": version},
        )
        return event_

    def delete_alias(self, name: str, alias: str, *, actor: str = "") -> AliasEvent:
        """Remove an alias, recording it in the audit trail; raises AliasNotFound."""

        def remove() -> AliasEvent:
            with self._session() as session:
                model = self._model(session, name)
                self._lock_model(session, model)
                row = session.scalar(
                    select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
                )
                if row is None:
                    raise AliasNotFound(name, alias)
                event_row = AliasEventRow(
                    model_id=model.id,
                    alias=alias,
                    from_version=row.version,
                    to_version=None,
                    actor=actor,
                    at=utcnow(),
                )
                session.delete(row)
                session.add(event_row)
                session.commit()
                return _to_event(name, event_row)

        return self._retry(remove)

    def alias_history(self, name: str) -> list[AliasEvent]:
        """The audit trail of a model's aliases, oldest first."""
        with self._session() as session:
            model = self._model(session, name)
            rows = session.scalars(
                select(AliasEventRow)
                .where(AliasEventRow.model_id == model.id)
                .order_by(AliasEventRow.id)
            )
            return [_to_event(name, row) for row in rows]

    # -- training runs --------------------------------------------------------------------------

    def record_run(self, name: str, run: TrainingRun) -> TrainingRun:
        """Store a training run for model ``name``; the given ``id`` is ignored."""

        def insert() -> TrainingRun:
            with self._session() as session:
                model = self._model(session, name)
                row = TrainingRunRow(
                    model_id=model.id,
                    version=run.version,
                    estimator=run.estimator,
                    task=run.task,
                    params=run.params,
                    metrics=run.metrics,
                    baseline_metrics=run.baseline_metrics,
                    data_path=run.data_path,
                    data_fingerprint=run.data_fingerprint,
                    rows_train=run.rows_train,
                    rows_test=run.rows_test,
                    duration_s=run.duration_s,
                    git_commit=run.git_commit,
                    started_at=run.started_at,
                )
                session.add(row)
                session.commit()
                return _to_run(name, row)

        return self._retry(insert)

    def list_runs(self, name: str | None = None) -> list[TrainingRun]:
        """Training runs, newest first; only ``name``'s when given."""
        with self._session() as session:
            query = select(TrainingRunRow, ModelRow.name).join(
                ModelRow, ModelRow.id == TrainingRunRow.model_id
            )
            if name is not None:
                model = self._model(session, name)
                query = query.where(TrainingRunRow.model_id == model.id)
            rows = session.execute(query.order_by(TrainingRunRow.id.desc()))
            return [_to_run(model_name, row) for row, model_name in rows]

    # -- internals ------------------------------------------------------------------------------

    def _alias_target(self, session: Session, model: ModelRow, alias: str) -> VersionRow:
        row = session.scalar(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
        )
        if row is None:
            raise AliasNotFound(model.name, alias)
        return self._version_row(session, model, row.version)

    @staticmethod
    def _latest_row(session: Session, model: ModelRow) -> VersionRow:
        row = session.scalar(
            select(VersionRow)
            .where(VersionRow.model_id == model.id, VersionRow.status == READY)
            .order_by(VersionRow.version.desc())
            .limit(1)
        )
        if row is None:
            raise VersionNotFound(model.name, "(none registered yet)")
        return row

    @staticmethod
    def _to_version(session: Session, model: ModelRow, row: VersionRow) -> ModelVersion:
        aliases = session.scalars(
            select(AliasRow.alias)
            .where(AliasRow.model_id == model.id, AliasRow.version == row.version)
            .order_by(AliasRow.alias)
        )
        return ModelVersion(
            name=model.name,
            version=row.version,
            framework=row.framework,
            artifact_uri=row.artifact_uri,
            model_file=row.model_file,
            sha256=row.sha256,
            signature=Signature.from_dict(row.signature),
            created_at=row.created_at,
            metrics=dict(row.metrics or {}),
            params=dict(row.params or {}),
            tags=dict(row.tags or {}),
            description=row.description,
            data_fingerprint=row.data_fingerprint,
            reference_profile=row.reference_profile,
            created_by=row.created_by,
            aliases=tuple(aliases),
        )


def _to_event(name: str, row: AliasEventRow) -> AliasEvent:
    return AliasEvent(name, row.alias, row.from_version, row.to_version, row.actor, row.at)


def _to_version_event(name: str, row: VersionEventRow) -> VersionEvent:
    return VersionEvent(name, row.version, row.action, row.reason, row.actor, row.at)


def _to_run(name: str, row: TrainingRunRow) -> TrainingRun:
    return TrainingRun(
        id=row.id,
        name=name,
        version=row.version,
        estimator=row.estimator,
        task=row.task,
        params=dict(row.params),
        metrics=dict(row.metrics),
        baseline_metrics=dict(row.baseline_metrics),
        data_path=row.data_path,
        data_fingerprint=row.data_fingerprint,
        rows_train=row.rows_train,
        rows_test=row.rows_test,
        duration_s=row.duration_s,
        git_commit=row.git_commit,
        started_at=row.started_at,
    )
