"""The loaded-model table: which versions are served, their state, and how to find them."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlserve.errors import MlserveError, ModelNotFound, NotReady, VersionNotFound
from mlserve.inputs import InputPolicy, build_checker, reference_batch
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.registry import ModelVersion, RegistryStore
from mlserve.runtimes import Runtime, load_runtime
from mlserve.serving.batching import MicroBatcher
from mlserve.serving.cache import PredictionCache
from mlserve.serving.executor import InferenceExecutor
from mlserve.serving.tabular import TabularSchema
from mlserve.types import DEFAULT_ALIAS, MANIFEST_FILE, ModelRef, read_manifest

log = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A resolved model version to serve: from the registry or from a self-describing folder."""

    name: str
    version: str
    folder: Path | None = None
    registered: ModelVersion | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.folder is None else str(self.folder)


@dataclass(slots=True)
class LoadedModel:
    """One served version: its runtime once loaded, or why it is not ready."""

    name: str
    version: str
    source: ModelSource
    state: State = "loading"
    reason: str | None = None
    runtime: Runtime | None = None
    schema: TabularSchema | None = None
    framework: str = ""
    load_s: float | None = None
    class_labels: list[str] = field(default_factory=list)
    batcher: MicroBatcher | None = None
    cache: PredictionCache | None = None

    @property
    def is_ready(self) -> bool:
        """True when loaded and warmed."""
        return self.state == "ready"


class ModelManager:
    """Loads configured models in the background and answers lookups from memory.

    Lookups never touch the registry; loading reads it in a worker thread.
    """

    def __init__(
        self,
        sources: list[ModelSource],
        *,
        store: RegistryStore | None,
        executor: InferenceExecutor,
        metrics: ServingMetrics,
        input_policy: Callable[[str], InputPolicy],
        safe_loading: bool,
        prepare: Callable[[LoadedModel], None] = lambda _model: None,
    ) -> None:
        self._sources = sources
        self._prepare = prepare
        self._store = store
        self._executor = executor
        self._metrics = metrics
        self._input_policy = input_policy
        self._safe = safe_loading
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self._default: dict[str, str] = {}
        for source in sources:
            self._models.setdefault(source.name, {})[source.version] = LoadedModel(
                source.name, source.version, source
            )
        for name, versions in self._models.items():
            # The newest version answers requests that name no version.
            self._default[name] = max(versions, key=lambda v: (len(v), v))

    @property
    def is_ready(self) -> bool:
        """True when every configured model is loaded and warmed."""
        return all(m.is_ready for m in self.all()) and bool(self._models)

    def knows(self, name: str) -> bool:
        """True when ``name`` is a configured model (ready or not)."""
        return name in self._models

    def all(self) -> list[LoadedModel]:
        """Every served (or failed) model version."""
        return [m for versions in self._models.values() for m in versions.values()]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to answer with; raises ModelNotFound, VersionNotFound or NotReady."""
        model = self.lookup(name, version)
        if not model.is_ready:
            reason = f": {model.reason}" if model.reason else ""
            raise NotReady(f"model {name!r} is {model.state}{reason}")
        return model

    def lookup(self, name: str, version: str | None = None) -> LoadedModel:
        """Like :meth:`get` but returns models that are not ready too (for metadata)."""
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFound(name)
        model = versions.get(version or self._default[name])
        if model is None:
            raise VersionNotFound(name, version or "")
        return model

    def versions(self, name: str) -> list[str]:
        """Served versions of a model, oldest first; raises ModelNotFound."""
        if name not in self._models:
            raise ModelNotFound(name)
        return sorted(self._models[name], key=lambda v: (len(v), v))

    async def close(self) -> None:
        """Stop every model's micro-batcher."""
        for model in self.all():
            if model.batcher is not None:
                await model.batcher.close()

    async def load_all(self) -> None:
        """Load every source concurrently; failures are recorded, never raised.

        Afterwards the objects that exist (libraries, models) are moved out of the garbage
        collector's reach: they live as long as the process, and scanning them in every full
        collection stalled requests for tens of milliseconds.
        """
        await asyncio.gather(*(self._load(source) for source in self._sources))
        gc.collect()
        gc.freeze()

    async def _load(self, source: ModelSource) -> None:
        model = self._models[source.name][source.version]
        started = time.perf_counter()
        try:
            folder, sha = await asyncio.to_thread(self._locate, source)
            runtime = await asyncio.to_thread(
                load_runtime, folder, expected_sha256=sha, safe=self._safe
            )
            manifest = read_manifest(folder)
            checker = await asyncio.to_thread(
                build_checker,
                runtime,
                manifest.reference_profile,
                self._input_policy(source.name),
            )
            model.runtime = runtime
            model.framework = manifest.framework
            model.schema = TabularSchema(checker)
            model.class_labels = [str(c) for c in runtime.classes]
            await self._warm(model, manifest.reference_profile)
            self._prepare(model)  # batcher and cache, per the model's options
        except MlserveError as exc:
            self._fail(model, str(exc))
            return
        except Exception as exc:  # a broken artifact must not take the server down
            log.exception("model load crashed", extra={"model": source.name})
            self._fail(model, f"{type(exc).__name__}: {exc}")
            return
        model.load_s = time.perf_counter() - started
        model.state = "ready"
        self._metrics.load_seconds.labels(model.name, model.version).set(model.load_s)
        self._metrics.model_ready.labels(model.name, model.version).set(1)
        log.info(
            "model loaded",
            extra={"model": model.name, "version": model.version, "load_s": round(model.load_s, 3)},
        )

    def _fail(self, model: LoadedModel, reason: str) -> None:
        model.state, model.reason = "failed", reason
        self._metrics.model_ready.labels(model.name, model.version).set(0)
        log.error(
            "model failed to load",
            extra={"model": model.name, "version": model.version, "reason": reason},
        )

    def _locate(self, source: ModelSource) -> tuple[Path, str | None]:
        """A local folder and the sha256 the registry recorded (None for plain folders)."""
        if source.folder is not None:
            return source.folder, None
        assert source.registered is not None
        assert self._store is not None
        return self._store.local_folder(source.registered), source.registered.sha256

    async def _warm(self, model: LoadedModel, profile: dict[str, Any] | None) -> None:
        """Run one prediction before taking traffic, so the first request is not the slow one."""
        assert model.runtime is not None
        batch = reference_batch(model.runtime.signature, profile)
        await self._executor.run(model.runtime.predict, batch)
        if model.runtime.has_proba:
            await self._executor.run(model.runtime.predict_proba, batch)


def resolve_sources(store: RegistryStore, refs: list[str]) -> list[ModelSource]:
    """Registry sources for references; with none, every model's ``production`` alias.

    Raises NotFound for an unknown model, version or alias: a typo should stop the start-up.
    """
    if refs:
        versions = [store.resolve(ModelRef.parse(ref)) for ref in refs]
    else:
        versions = [
            store.resolve(ModelRef(info.name, alias=DEFAULT_ALIAS))
            for info in store.list_models()
            if DEFAULT_ALIAS in info.aliases
        ]
    return [ModelSource(v.name, str(v.version), registered=v) for v in versions]


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
