"""The model manager: which versions are served, what each model name answers with, and how that
follows the registry while the server runs.

Requests get only ready `ServedVersion`s. Every version a followed alias points at is served and
reachable by its number; a model name answers with its first followed reference (``production``
for a bare name). When an alias moves (``sync``, every reload interval, on SIGHUP or on demand),
the new version is loaded and warmed beside the old, the name switches to it in one assignment,
and the old one is retired: it answers what it already took, then its memory goes. A version
that fails to load changes nothing but its status: the old one keeps serving, and the failure is
kept (with its reason) until the alias moves again. Readiness is decided once, by the first
load of every configured model: loading or unloading later never changes it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlserve.errors import (
    AliasNotFound,
    ArtifactStoreUnavailable,
    MlserveError,
    ModelNotFound,
    NotFound,
    NotReady,
    VersionNotFound,
)
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.registry import ModelInfo, RegistryStore, Rollout
from mlserve.serving.registry_health import RegistryHealth
from mlserve.serving.rollout import (
    VERSION_HEADER,
    Route,
    Routed,
    ShadowMirror,
    TrafficSplit,
    same_inputs,
)
from mlserve.serving.served import ModelSource, ServedVersion, VersionLoader
from mlserve.types import DEFAULT_ALIAS, MANIFEST_FILE, ModelRef, VersionPolicy, read_manifest

log = logging.getLogger(__name__)

RETRY_FIRST_S = 5.0
RETRY_MOST_S = 300.0
"""A version whose artifact store could not be reached is loaded again after RETRY_FIRST_S,
the wait doubling up to RETRY_MOST_S: the store coming back brings the version in."""

State = Literal["loading", "ready", "failed", "unloaded"]

GUARDRAIL_ACTOR = "mlserve serve (guardrail)"
"""Who the audit trail says rolled back a rollout whose candidate broke a guardrail."""


@dataclass(slots=True)
class VersionStatus:
    """What became of one version the server was asked to serve."""

    name: str
    version: str
    state: State
    reason: str | None = None
    load_s: float | None = None
    framework: str = ""

    @property
    def is_ready(self) -> bool:
        """True when loaded and warmed."""
        return self.state == "ready"


@dataclass(slots=True)
class Wanted:
    """What one model should serve now: its references' targets (the first is what its name
    answers with; a reference that names nothing is its error) and what its policy adds."""

    followed: list[ModelSource | MlserveError]
    extra: list[ModelSource]
    rollout: Rollout | None = None
    """The model's active rollout (its candidate is among ``extra``)."""


class ModelManager:
    """Serves versions and answers lookups from memory; reads the registry only to follow it,
    in worker threads."""

    def __init__(
        self,
        refs: list[ModelRef],
        *,
        sources: list[ModelSource] | None = None,
        store: RegistryStore | None,
        loader: VersionLoader,
        metrics: ServingMetrics,
        policy: Callable[[str], VersionPolicy] = lambda _name: VersionPolicy(),
        follow_all: bool = False,
        reload_interval_s: float = 0.0,
    ) -> None:
        """``refs`` are followed in the registry (a version number pins; an alias or a bare
        name follows); ``sources`` are fixed versions (a model folder, no registry).
        ``policy`` says which more versions of a model are served (default: every aliased
        one); with ``follow_all``, models registered later are served too (as bare names).
        ``follow`` reads the registry every ``reload_interval_s`` (0: only on SIGHUP), backing
        off while it cannot be reached (see registry_health.py)."""
        self._refs = list(refs)
        self._policy = policy
        self._follow_all = follow_all
        self._fixed = list(sources or [])
        self._store = store
        self._health = RegistryHealth(
            store.safe_url if store is not None else "",
            metrics.registry_up,
            reload_interval_s,
        )
        self._loader = loader
        self._metrics = metrics
        self._served: dict[str, dict[str, ServedVersion]] = {}
        self._default: dict[str, str] = {}
        self._status: dict[str, dict[str, VersionStatus]] = {}
        self._failed_sha: dict[tuple[str, str], str | None] = {}
        self._retry_at: dict[tuple[str, str], tuple[float, int]] = {}
        """Versions that failed because their store could not be reached: when to try again,
        and how many times they failed so (the wait doubles)."""
        self._configured = sorted({r.name for r in refs} | {s.name for s in self._fixed})
        self._ready = False
        self._first_load_done = False
        """Until the first load has run, a configured model without a status yet is loading."""
        self._pinned: set[tuple[str, str]] = set()
        """Versions loaded by number through the repository API: kept until unloaded."""
        self._paused: set[str] = set()
        """Models unloaded through the repository API: not followed until loaded again."""
        self._sync_lock: asyncio.Lock | None = None
        self._splits: dict[str, TrafficSplit] = {}
        """Active rollouts by model, as the request path applies them."""
        self._routed = _Children(metrics.routed)
        self._ended: set[int] = set()
        """Rollouts this server rolled back: never applied again."""
        self._unrecorded: dict[int, tuple[str, str]] = {}
        """Rollbacks not yet recorded in the registry (it was down): rollout id -> (model,
        reason), retried at every sync."""

    # -- lookups (the request path: memory only) -------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """True once every configured model's first load succeeded (later loads never change it)."""
        return self._ready

    def knows(self, name: str) -> bool:
        """True when ``name`` is a model this server serves or was asked to (for metric labels)."""
        return name in self._status

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The ready version to answer with; raises ModelNotFound, VersionNotFound or NotReady."""
        versions = self._served.get(name)
        if versions is not None:
            served = versions.get(version or self._default.get(name, ""))
            if served is not None:
                return served
        status = self.lookup(name, version)
        reason = f": {status.reason}" if status.reason else ""
        raise NotReady(f"model {name!r} is {status.state} (version {status.version}){reason}")

    def lookup(self, name: str, version: str | None = None) -> VersionStatus:
        """The status of a version (the default one when ``version`` is None), ready or not;
        raises ModelNotFound or VersionNotFound."""
        statuses = self._status.get(name)
        if not statuses and not self._first_load_done and name in self._configured:
            # a worker takes connections before its first load has begun: busy, not missing
            raise NotReady(f"model {name!r} is loading (the server is starting)")
        if statuses is None:
            raise ModelNotFound(name)
        key = version or self._default.get(name)
        if key is None or key not in statuses:
            live = [s for s in statuses.values() if s.state != "unloaded"]
            if version is None and live:  # configured, first load still under way or failed
                return live[0]
            if version is None:  # unloaded through the repository API
                raise ModelNotFound(name)
            raise VersionNotFound(name, version)
        if statuses[key].state == "unloaded":  # served once: now as unserved as any other
            raise VersionNotFound(name, key)
        return statuses[key]

    def served(self) -> list[ServedVersion]:
        """Every ready version."""
        return [v for versions in self._served.values() for v in versions.values()]

    def statuses(self, *, unloaded: bool = False) -> list[VersionStatus]:
        """Every version this server serves, loads or failed to load (and, with ``unloaded``,
        retired), by model."""
        return [
            s
            for name in sorted(self._status)
            for s in _ordered(self._status[name].values())
            if unloaded or s.state != "unloaded"
        ]

    def default_version(self, name: str) -> str | None:
        """The version a request naming only ``name`` gets."""
        return self._default.get(name)

    def versions(self, name: str) -> list[str]:
        """Served versions of a model, oldest first; raises ModelNotFound."""
        if name not in self._status:
            raise ModelNotFound(name)
        return sorted(self._served.get(name, {}), key=_version_key)

    def route(
        self, name: str, version: str | None, headers: Mapping[str, str]
    ) -> tuple[ServedVersion, Route, Routed | None]:
        """The ready version for a request, why it answers, and (when the model's rollout
        routed it) its record. A version in the path or in the X-Model-Version header is taken
        as asked; a bare name goes where the model's rollout sends it."""
        split = self._splits.get(name)
        explicit = version or headers.get(VERSION_HEADER)
        if explicit:
            served = self.get(name, explicit)
            if split is not None:
                self._routed[(name, served.version, "explicit")].inc()
            return served, "explicit", None
        if split is None:
            return self.get(name), "production", None
        key = headers.get(split.sticky_header) if split.sticky_header else None
        production = self.get(name)
        candidate = self._served[name].get(split.candidate) if split.choose(key) else None
        served = candidate or production
        route: Route = "sticky" if key is not None else ("canary" if candidate else "production")
        self._routed[(name, served.version, route)].inc()
        return (
            served,
            route,
            Routed(split, candidate is not None, production if candidate else None),
        )

    def rollout(self, name: str) -> TrafficSplit | None:
        """The model's active rollout as this server applies it (None without one)."""
        return self._splits.get(name)

    def _split(self, name: str, rollout: Rollout | None) -> None:
        """Apply ``name``'s rollout (None: none is active): the candidate takes its share once
        it is served; until then, and after the rollout ends, production answers all."""
        current = self._splits.get(name)
        if rollout is not None and rollout.id in self._ended:
            rollout = None  # rolled back here, not yet recorded in the registry
        if rollout is None or str(rollout.candidate) not in self._served.get(name, {}):
            if current is not None:
                del self._splits[name]
                self._set_weights(current.rollout, 0.0, 0.0)
            return
        if current is None or current.rollout != rollout:
            self._splits[name] = (
                current.updated(rollout) if current is not None else TrafficSplit(rollout)
            )
            self._set_weights(rollout, rollout.canary, rollout.shadow)
            log.info(
                "rollout applied",
                extra={
                    "model": name,
                    "version": str(rollout.candidate),
                    "canary": rollout.canary,
                    "shadow": rollout.shadow,
                },
            )

    def _mirror(self, name: str) -> None:
        """Point the model's answering version's shadow at its rollout's candidate (when the
        rollout mirrors and both take the same rows), and every other version's at nothing."""
        versions = self._served.get(name, {})
        split = self._splits.get(name)
        primary = versions.get(self._default.get(name, ""))
        candidate = versions.get(split.candidate) if split is not None else None
        shadow = split.rollout.shadow if split is not None else 0.0
        if primary is None or candidate is None or primary is candidate or shadow <= 0:
            primary = None  # nothing mirrors
        for served in versions.values():
            if served.shadow is not None and served is not primary:
                served.shadow = None
        if primary is None or candidate is None:
            return
        if primary.shadow is not None and primary.shadow.shadow is candidate:
            primary.shadow.percent = shadow
        elif same_inputs(primary, candidate):
            primary.shadow = ShadowMirror(candidate, shadow, self._metrics)
        else:
            log.warning(
                "shadow needs the same input features in both versions; not mirroring",
                extra={"model": name, "version": candidate.version},
            )

    def _set_weights(self, rollout: Rollout, canary: float, shadow: float) -> None:
        version = str(rollout.candidate)
        self._metrics.rollout_weight.labels(rollout.name, version, "canary").set(canary)
        self._metrics.rollout_weight.labels(rollout.name, version, "shadow").set(shadow)

    async def _guard(self) -> None:
        """Roll back every rollout whose candidate broke a guardrail in this server's window
        (several servers may decide it at once: the registry keeps the first)."""
        assert self._store is not None
        for name, split in list(self._splits.items()):
            reason = split.breach()
            if reason is None:
                continue
            del self._splits[name]  # production answers all from this request on
            self._set_weights(split.rollout, 0.0, 0.0)
            self._metrics.rollbacks.labels(name).inc()
            log.warning(
                "rollout rolled back",
                extra={"model": name, "version": split.candidate, "reason": reason},
            )
            self._ended.add(split.rollout.id)
            self._unrecorded[split.rollout.id] = (name, reason)
        for rollout_id, (name, reason) in list(self._unrecorded.items()):
            try:
                await asyncio.to_thread(
                    self._store.rollback_rollout,
                    name,
                    reason,
                    actor=GUARDRAIL_ACTOR,
                    rollout_id=rollout_id,
                )
            except Exception:  # the registry is down: recorded at a later sync
                log.warning("could not record the rollback", exc_info=True)
            else:
                del self._unrecorded[rollout_id]

    async def explain_missing(self, name: str, version: str | None) -> NotFound:
        """The 404 for a model or version this server does not serve, saying whether the
        registry has it and how to serve it (the registry is read in a worker thread)."""
        if self._store is None:
            return (
                ModelNotFound(name)
                if name not in self._status
                else VersionNotFound(name, version or "")
            )
        ref = ModelRef(name, int(version)) if version and version.isdigit() else ModelRef(name)
        try:
            await asyncio.to_thread(self._store.resolve, ref)
        except NotFound as missing:
            return missing
        except MlserveError:
            return ModelNotFound(name)
        except Exception as exc:  # the registry is down: a 404 still, not a 500
            if self._store.unavailable(exc) is None:
                raise
            return ModelNotFound(name)
        label = f"{name}:{version}" if version else name
        load = f'{{"parameters": {{"version": "{version}"}}}}' if version else "{}"
        ways = [f"load it (POST /v2/repository/models/{name}/load {load})"]
        if name in self._status and version:
            ways[:0] = [
                f"point an alias at it (mlserve alias set {name} staging {version})",
                f"widen its version policy (models: {{{name}: {{versions: all}}}} in mlserve.yaml)",
            ]
        else:
            ways.append(f"start a server with mlserve serve {label} (or mlserve serve --all)")
        return NotFound(
            f"{label} is registered but this server does not serve it: {', '.join(ways[:-1])}, "
            f"or {ways[-1]}"
        )

    # -- loading and following ----------------------------------------------------------------

    async def load_all(self) -> None:
        """The first load: every configured model, concurrently; failures are recorded. Then
        the objects that exist (libraries, models) leave the garbage collector's reach: they
        live as long as the process, and scanning them in every full collection stalled
        requests for tens of milliseconds."""
        for name in self._configured:
            self._status.setdefault(name, {})
        await asyncio.gather(
            *(self._install(source, default=False) for source in self._fixed),
            self.sync(initial=True),
        )
        for name in {s.name for s in self._fixed}:  # a folder's newest version answers
            served = sorted(self._served.get(name, {}), key=_version_key)
            if served:
                self._default[name] = served[-1]
        self._ready = all(
            name in self._served and self._default.get(name) for name in self._configured
        )
        self._first_load_done = True
        served = [f"{s.name}:{s.version}" for s in self.statuses() if s.is_ready]
        log.info("first load done", extra={"ready": self._ready, "serving": served})
        # What start-up made lives as long as the server: frozen, no collection walks it again.
        # `mlserve serve` starts with the collector off (serve_cmd.serve): then start-up left
        # no garbage worth a full collection (measured: none; the collection cost 115 ms of a
        # 2.8 s cold start, and three more during imports 350 ms), and it is turned on here.
        if gc.isenabled():
            gc.collect()
        gc.freeze()
        gc.enable()

    async def follow(self) -> None:
        """Load every configured model, then follow the registry every reload interval (0:
        only on SIGHUP), waiting longer while it cannot be reached, until cancelled."""
        await self.load_all()
        if self._health.next_read_in_s() <= 0:
            return
        while True:
            await asyncio.sleep(self._health.next_read_in_s())
            await self.sync()

    async def sync(self, *, initial: bool = False) -> None:
        """Follow the registry: load what the followed references point at now, switch names to
        it, retire what nothing points at any more. Never raises (a registry that cannot be
        read is reported, and what is loaded keeps serving); one sync at a time."""
        if self._store is None or not (self._refs or self._follow_all):
            return
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            await self._guard()
            try:
                wanted = await asyncio.to_thread(self._resolve_all)
            except Exception as exc:  # a registry that is down: keep serving what we have
                self._health.failed(self._store.unavailable(exc) or exc)
                return
            self._health.succeeded()
            followed = {ref.name for ref in self._refs}
            for name in wanted:
                if name not in followed:  # registered since the last look (follow_all)
                    self._refs.append(ModelRef(name))
                    self._status.setdefault(name, {})
            await asyncio.gather(
                *(self._follow(name, targets, initial) for name, targets in wanted.items())
            )

    def _resolve_all(self) -> dict[str, Wanted]:
        """What each followed model serves now (blocking: a worker thread): the versions its
        references point at, then the ones its version policy adds, newest first. References
        that follow (an alias, a bare name) come before pinned versions, which come newest
        first: the first one is what the model's name answers with."""
        assert self._store is not None
        models = {info.name: info for info in self._store.list_models()}
        refs = list(self._refs)
        if self._follow_all:
            followed = {ref.name for ref in refs}
            refs += [ModelRef(name) for name in models if name not in followed]
        wanted: dict[str, list[tuple[tuple[int, int], ModelSource | MlserveError]]] = {}
        for position, ref in enumerate(refs):
            if ref.name in self._paused:
                continue
            order = (1, -ref.version) if ref.version is not None else (0, position)
            try:
                version = self._store.resolve(ref)
            except (ModelNotFound, VersionNotFound, AliasNotFound) as exc:
                wanted.setdefault(ref.name, []).append((order, exc))
                continue
            source = ModelSource(version.name, str(version.version), registered=version)
            wanted.setdefault(ref.name, []).append((order, source))
        rollouts = {rollout.name: rollout for rollout in self._store.active_rollouts()}
        resolved: dict[str, Wanted] = {}
        for name, targets in wanted.items():
            ordered = [target for _, target in sorted(targets, key=lambda t: t[0])]
            extra = self._widened(name, models.get(name), ordered)
            rollout = rollouts.get(name)
            taken = {t.version for t in [*ordered, *extra] if isinstance(t, ModelSource)}
            if rollout is not None and str(rollout.candidate) not in taken:
                try:
                    candidate = self._store.get_version(name, rollout.candidate)
                except (ModelNotFound, VersionNotFound):
                    rollout = None
                else:
                    extra.append(ModelSource(name, str(rollout.candidate), registered=candidate))
            resolved[name] = Wanted(ordered, extra, rollout)
        return resolved

    def _widened(
        self, name: str, info: ModelInfo | None, targets: list[ModelSource | MlserveError]
    ) -> list[ModelSource]:
        """The versions ``name``'s policy serves beyond ``targets`` (blocking)."""
        assert self._store is not None
        if info is None or not info.version_count:
            return []
        policy = self._policy(name)
        if policy.kind == "aliases":
            registered: list[int] = sorted(set(info.aliases.values()))
        else:
            registered = [v.version for v in self._store.list_versions(name)]
        taken = {t.version for t in targets if isinstance(t, ModelSource)}
        extra: list[ModelSource] = []
        for number in policy.select(registered, info.aliases.values()):
            if str(number) in taken:
                continue
            try:
                version = self._store.get_version(name, number)
            except (ModelNotFound, VersionNotFound):  # deleted since the listing
                continue
            extra.append(ModelSource(name, str(number), registered=version))
        return extra

    async def _follow(self, name: str, wanted: Wanted, initial: bool) -> None:
        """Serve every version ``name``'s references and policy point at, switch its default
        to the first reference's, and retire versions nothing points at any more."""
        followed = [t for t in wanted.followed if isinstance(t, ModelSource)]
        if not followed:
            if initial and wanted.followed:
                self._record(name, "?", "failed", str(wanted.followed[0]))
            return
        sources = followed + wanted.extra
        await asyncio.gather(*(self._ensure(source) for source in sources))
        first = sources[0].version
        if first in self._served.get(name, {}) and self._default.get(name) != first:
            previous = self._default.get(name)
            self._default[name] = first  # the switch: one assignment, between two requests
            if previous is not None:
                log.info(
                    "model switched",
                    extra={"model": name, "version": first, "from_version": previous},
                )
        self._split(name, wanted.rollout)
        self._mirror(name)
        if not self._default.get(name) and not initial:
            return
        keep = {s.version for s in sources if s.version in self._served.get(name, {})}
        keep.add(self._default.get(name, ""))
        keep |= {version for model, version in self._pinned if model == name}
        for version in list(self._served.get(name, {})):
            if version not in keep:
                await self._retire(name, version)

    async def _ensure(self, source: ModelSource) -> None:
        """Load ``source`` unless it is served, or failed with these very files."""
        name, version = source.name, source.version
        if version in self._served.get(name, {}):
            return
        sha = source.registered.sha256 if source.registered else None
        failed = self._failed_sha.get((name, version), "none")
        retry = self._retry_at.get((name, version))
        if failed == sha and (retry is None or time.monotonic() < retry[0]):
            return  # broken as it was: retried when the alias moves or on an explicit load
        await self._install(source, default=False)  # _follow switches the name once all loaded

    async def _install(self, source: ModelSource, *, default: bool) -> ServedVersion | None:
        """Load one version beside what is served; None (with its failure recorded) if it
        cannot serve."""
        name, version = source.name, source.version
        self._record(name, version, "loading")
        try:
            served = await self._loader.load(source)
        except MlserveError as exc:
            self._fail(source, str(exc), unreachable=isinstance(exc, ArtifactStoreUnavailable))
            return None
        except Exception as exc:  # a broken artifact must not take the server down
            log.exception("model load crashed", extra={"model": name, "version": version})
            self._fail(source, f"{type(exc).__name__}: {exc}")
            return None
        self._failed_sha.pop((name, version), None)
        self._retry_at.pop((name, version), None)
        self._served.setdefault(name, {})[version] = served
        if default:
            self._default[name] = version
        self._record(name, version, "ready", load_s=served.load_s, framework=served.framework)
        self._metrics.load_seconds.labels(name, version).set(served.load_s)
        self._metrics.model_ready.labels(name, version).set(1)
        self._metrics.reloads.labels(name, "loaded").inc()
        log.info(
            "model loaded",
            extra={"model": name, "version": version, "load_s": round(served.load_s, 3)},
        )
        return served

    async def load_model(self, name: str, version: str | None = None) -> list[VersionStatus]:
        """The repository API's load: one registered version beside the others, or (without a
        version) what the model's references point at now, followed from then on (a model
        this server did not serve is followed as a bare name: production, else the latest).
        A failed version keeps what is served. Raises NotFound for what the registry lacks."""
        if self._store is None:
            raise NotFound("this server serves a model folder; it loads nothing else")
        ref = ModelRef(name) if version is None else ModelRef(name, int(version))
        registered = await asyncio.to_thread(self._store.resolve, ref)  # NotFound for a typo
        self._status.setdefault(name, {})
        if version is not None:
            if version not in self._served.get(name, {}):
                self._failed_sha.pop((name, version), None)  # asked for: try again
                await self._install(
                    ModelSource(name, version, registered=registered),
                    default=name not in self._default,
                )
            if self._status[name][version].is_ready:
                self._pinned.add((name, version))
            return [self._status[name][version]]
        if not any(ref.name == name for ref in self._refs):
            self._refs.append(ModelRef(name))
        self._paused.discard(name)
        for key in [k for k in self._failed_sha if k[0] == name]:
            del self._failed_sha[key]  # asked for: try again
        await self.sync()
        return [s for s in self.statuses() if s.name == name and s.state != "unloaded"]

    async def unload(self, name: str, version: str | None = None) -> list[VersionStatus]:
        """Stop serving a version, or (``version`` None) the whole model, which is then no
        longer followed until loaded again. Raises ModelNotFound or VersionNotFound."""
        if name not in self._status:
            raise ModelNotFound(name)
        versions = [version] if version else list(self._served.get(name, {}))
        for each in versions:
            if each not in self._served.get(name, {}):
                raise VersionNotFound(name, each)
        if version is None:
            self._paused.add(name)
        for each in versions:
            self._pinned.discard((name, each))
            await self._retire(name, each)
        return [self._status[name][v] for v in versions]

    async def _retire(self, name: str, version: str) -> None:
        """Stop handing ``version`` out, let it answer what it took, and drop it."""
        served = self._served.get(name, {}).pop(version, None)
        if served is None:
            return
        if self._default.get(name) == version:
            remaining = sorted(self._served.get(name, {}), key=_version_key)
            if remaining:
                self._default[name] = remaining[-1]
            else:
                self._default.pop(name, None)
        await served.retire()
        del served
        # A version and its batcher point at each other (the batcher calls the version's
        # predict): only a collection frees them, and one model's memory is worth it now.
        gc.collect()
        self._record(name, version, "unloaded")
        self._metrics.model_ready.labels(name, version).set(0)
        log.info("model unloaded", extra={"model": name, "version": version})

    def _fail(self, source: ModelSource, reason: str, *, unreachable: bool = False) -> None:
        """Record a failed load. One whose store could not be reached is tried again at a
        later sync (after 5 s, doubling to 5 min); any other waits for its alias to move or an
        explicit load: the same files would fail the same way."""
        name, version = source.name, source.version
        self._failed_sha[(name, version)] = source.registered.sha256 if source.registered else None
        if unreachable:
            attempts = self._retry_at.get((name, version), (0.0, 0))[1] + 1
            wait_s = min(RETRY_FIRST_S * 2 ** (attempts - 1), RETRY_MOST_S)
            self._retry_at[(name, version)] = (time.monotonic() + wait_s, attempts)
        else:
            self._retry_at.pop((name, version), None)
        self._record(name, version, "failed", reason)
        self._metrics.model_ready.labels(name, version).set(0)
        self._metrics.reloads.labels(name, "failed").inc()
        log.error(
            "model failed to load", extra={"model": name, "version": version, "reason": reason}
        )

    def _record(
        self,
        name: str,
        version: str,
        state: State,
        reason: str | None = None,
        *,
        load_s: float | None = None,
        framework: str = "",
    ) -> None:
        statuses = self._status.setdefault(name, {})
        previous = statuses.get(version)
        statuses[version] = VersionStatus(
            name,
            version,
            state,
            reason,
            load_s if load_s is not None else (previous.load_s if previous else None),
            framework or (previous.framework if previous else ""),
        )
        if version != "?":
            statuses.pop("?", None)

    async def close(self) -> None:
        """Stop every version's batcher (the server has drained its requests first)."""
        for served in self.served():
            await served.batcher.close()


class _Children(dict[tuple[str, ...], Any]):
    """A metric's children by label values, each looked up once (.labels() takes a lock)."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: tuple[str, ...]) -> Any:
        child = self._metric.labels(*key)
        self[key] = child
        return child


def _version_key(version: str) -> tuple[int, str]:
    return (len(version), version)


def _ordered(statuses: Iterable[VersionStatus]) -> list[VersionStatus]:
    return sorted(statuses, key=lambda s: _version_key(s.version))


def resolve_refs(
    store: RegistryStore, refs: list[str], *, every_model: bool = False
) -> list[ModelRef]:
    """The references to follow: ``refs``, then (``every_model``) every other model by bare
    name; with neither, every model's ``production`` alias.

    Raises NotFound for an unknown model, version or alias: a typo should stop the start-up.
    """
    parsed = [ModelRef.parse(ref) for ref in refs]
    for ref in parsed:
        store.resolve(ref)
    if every_model:
        named = {ref.name for ref in parsed}
        return parsed + [
            ModelRef(info.name)
            for info in store.list_models()
            if info.name not in named and info.version_count
        ]
    if parsed:
        return parsed
    return [
        ModelRef(info.name, alias=DEFAULT_ALIAS)
        for info in store.list_models()
        if DEFAULT_ALIAS in info.aliases
    ]


def discover_model_dir(root: Path) -> list[ModelSource]:
    """Every version folder (holding mlserve.json) under ``root``, up to two levels down.

    Accepts a version folder itself, a model folder of versions, or an artifact root of models.
    """
    if not root.is_dir():
        raise ModelNotFound(f"{root} (no such folder)")
    candidates = [root, *root.glob("*"), *root.glob("*/*")]
    folders = [p for p in candidates if (p / MANIFEST_FILE).is_file()]
    sources = []
    for folder in sorted(folders):
        manifest = read_manifest(folder)
        sources.append(ModelSource(manifest.name, str(manifest.version), folder=folder))
    if not sources:
        raise ModelNotFound(f"{root} (no {MANIFEST_FILE} found in it or two levels below)")
    return sources
