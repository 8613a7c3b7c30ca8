"""The one settings object: defaults < mlserve.yaml < environment and .env < command-line flags.

`cli` (or a test) builds it once and hands components only the values they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mlserve.errors import ConfigError
from mlserve.types import VersionPolicy

CONFIG_FILE = "mlserve.yaml"
REDIS_SCHEMES = ("redis", "rediss", "unix")
"""URL schemes redis-py connects with."""


class ModelOptions(BaseModel):
    """Settings of one served model (`models: {NAME: {...}}` in mlserve.yaml, or
    MLSERVE_MODELS__NAME__CACHE=true); unset fields fall back to the server-wide ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: bool | Literal["redis"] = False
    """Cache this model's responses (keyed by version and exact input): `true` in this
    process, `redis` in the Redis at redis_url, shared by every replica."""
    cache_ttl_s: float = Field(default=300.0, gt=0)
    """How long a cached response stays valid."""
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Memory budget of this model's in-process cache (least recently used entries go first);
    a Redis cache is bounded by Redis's own maxmemory."""
    cache_max_entry_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest response (with what was predicted, for the prediction log) a cache keeps;
    larger ones are computed every time."""
    max_batch_size: int | None = Field(default=None, ge=1)
    """Override of the server-wide max_batch_size."""
    max_batch_rows: int | None = Field(default=None, ge=1)
    """Override of the server-wide max_batch_rows."""
    max_batch_wait_ms: float | None = Field(default=None, ge=0)
    """Override of the server-wide max_batch_wait_ms."""
    missing_values: Literal["model", "reject"] | None = None
    """Override of the server-wide missing_values."""
    unknown_categories: Literal["reject", "accept"] | None = None
    """Override of the server-wide unknown_categories."""
    extra_columns: Literal["ignore", "reject"] | None = None
    """Override of the server-wide extra_columns."""
    versions: str | list[int] | None = None
    """Override of the server-wide versions policy."""
    online_accuracy_floor: float | None = Field(default=None, ge=0, le=1)
    """Override of the server-wide online_accuracy_floor."""

    @field_validator("versions", mode="before")
    @classmethod
    def _valid_policy(cls, value: object) -> object:
        return _version_policy(value)


class Settings(BaseSettings):
    """Every knob mlserve has; each documented where it is declared (and in .env.example)."""

    model_config = SettingsConfigDict(
        env_prefix="MLSERVE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        # .env is shared with other tools, so unknown keys there are ignored; mlserve.yaml is
        # ours, and load_settings rejects unknown keys in it.
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    home: Path = Path(".mlserve")
    """Folder for the embedded registry database and artifacts."""
    database_url: str | None = None
    """Registry database; any SQLAlchemy URL. Default: a SQLite file in `home`."""
    artifact_root: str | None = None
    """Where artifacts live: a local folder or an fsspec URL (s3://...). Default: `home`/artifacts."""
    safe_loading: bool = False
    """Refuse pickle/joblib artifacts; load only skops files with trusted types."""
    train_require_better: bool = False
    """`mlserve train` refuses to register a model that does not beat its trivial baseline."""

    host: str = "127.0.0.1"
    """Address the server listens on."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port the server listens on."""
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the Open Inference Protocol's gRPC service (on `host`); 0 switches it off."""
    workers: int = Field(default=1, ge=1)
    """Server processes sharing the port."""
    inference_workers: int = Field(default=4, ge=1)
    """Threads that run model code in each server process."""
    max_batch_size: int = Field(default=64, ge=1)
    """Rows a batch waits (at most max_batch_wait_ms) to collect before its predict call."""
    max_batch_rows: int = Field(default=1024, ge=1)
    """Most rows stacked into one predict call from requests already queued; requests larger
    than max_batch_size still share calls up to this many rows."""
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    """How long the micro-batcher holds a request while waiting for company."""
    inline_predict_max_ms: float = Field(default=0.5, ge=0)
    """Small batches of a model measured to predict within this many ms run on the event loop
    (a hand-off to a worker thread costs ~0.1 ms); 0 sends every call to the thread pool."""
    switch_interval_ms: float = Field(default=0.5, gt=0)
    """Python's GIL switch interval while serving (Python's own default is 5 ms): how long the
    event loop can wait for the GIL while the prediction-log writer or a predict in the thread
    pool holds it. Python's 5 ms let one busy writer batch hold a request for most of that."""
    models: dict[str, ModelOptions] = Field(default_factory=dict)
    """Per-model options (cache, batching), by model name."""
    max_queue_rows: int = Field(default=4096, ge=1)
    """Most rows queued per model; beyond it requests get 503 with Retry-After at once."""
    max_queue_requests: int = Field(default=256, ge=1)
    """Most requests queued per model, whatever their rows; beyond it requests get 503 with
    Retry-After at once (one-row floods would otherwise never fill max_queue_rows)."""
    hold_refused_connections: bool = True
    """A connection answered 503 that sends again before its Retry-After waits out the rest
    first (measured: goodput at 1,024 clients 24 -> ~640 req/s, bench/results/overload.md).
    Turn off behind a proxy that reuses one upstream connection for many users."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of a queued request; past it the request is dropped and answered 504."""
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    missing_values: Literal["model", "reject"] = "model"
    """Missing inputs (null, NaN, an empty CSV field): `model` accepts them in the features the
    model fills in itself (an imputer in its pipeline, an estimator that takes NaN; probed when
    it loads) and rejects the row elsewhere; `reject` refuses them everywhere."""
    unknown_categories: Literal["reject", "accept"] = "reject"
    """A categorical value training never saw: `reject` refuses the row (a typo or wrong code is
    the likely cause); `accept` scores it as the pipeline does, counted in
    mlserve_unknown_categories_total and flagged in the prediction log."""
    extra_columns: Literal["ignore", "reject"] = "ignore"
    """Columns that are not features of the model, in any format: `ignore` them (as MLflow
    does), or `reject` the rows that carry them."""
    api_key: SecretStr | None = None
    """API key(s) for inference endpoints, comma-separated. Unset: no auth."""
    admin_api_key: SecretStr | None = None
    """Admin key(s), comma-separated, for the model repository API (load, unload, index): it
    changes what is served, so inference keys are refused there. Unset: the repository API is
    open on a server listening on loopback only, and off otherwise."""
    protect_health: bool = False
    """Require the API key on health and metrics endpoints too."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long in-flight requests get to finish."""
    versions: str | list[int] = "aliases"
    """Which versions of each served model are loaded and answer at
    /v2/models/NAME/versions/N: `aliases` (every version an alias points at), `latest N` (those
    and the newest N), `all`, or version numbers (`1,3`: those and the aliased ones)."""
    reload_interval_s: float = Field(default=2.0, ge=0)
    """How often the server checks the registry for moved aliases and serves what they point at
    now (also at once on SIGHUP); 0 checks only on SIGHUP."""
    redis_url: str | None = None
    """Redis of the shared prediction cache (models with `cache: redis`), e.g.
    redis://cache:6379/0 (rediss:// for TLS, unix:///path.sock); holds cached responses and
    their inputs (minus prediction_log_redact) for cache_ttl_s."""
    redis_timeout_ms: float = Field(default=50.0, gt=0)
    """Longest a request waits on Redis; past it, or when Redis is down, requests are answered
    without the shared cache and Redis is tried again after a backoff (at most 2 s)."""

    access_log: bool = True
    """Log one JSON line per request (method, path, status, latency, model, version)."""

    prediction_log: bool = True
    """Keep a durable log of predictions (inputs, outputs, latency) for drift and feedback."""
    prediction_log_url: str | None = None
    """Prediction log database; any SQLAlchemy URL. Default: a SQLite file (WAL) in `home`."""
    prediction_log_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of requests whose predictions are logged (1 = every one)."""
    prediction_log_queue_size: int = Field(default=20_000, ge=1)
    """Most prediction records waiting to be written; the queue depth is a metric."""
    prediction_log_when_full: Literal["block", "drop"] = "block"
    """A full queue holds requests back until the writer catches up (`block`), or drops the
    records and counts them in mlserve_prediction_log_dropped_total (`drop`)."""
    prediction_log_batch_size: int = Field(default=1000, ge=1)
    """Most records the writer puts into one database transaction."""
    prediction_log_redact: list[str] = Field(default_factory=list)
    """Features never written to the prediction log (JSON list, e.g. ["email","ssn"])."""
    prediction_log_retention_days: float = Field(default=30.0, gt=0)
    """Records older than this are pruned."""

    drift_interval_s: float = Field(default=60.0, ge=0)
    """How often the server compares recent inputs with each version's reference (0 = never)."""
    drift_window_s: float = Field(default=3600.0, gt=0)
    """How far back the drift check looks."""
    drift_alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the drift tests, after correcting for testing many features."""
    drift_min_rows: int = Field(default=100, ge=1)
    """Fewest logged rows in the window before drift is judged."""
    feedback_window_s: float = Field(default=86_400.0, gt=0)
    """Window of labelled predictions behind online accuracy, F1 and MAE."""
    online_accuracy_floor: float | None = Field(default=None, ge=0, le=1)
    """Online accuracy below which the shipped MlserveOnlineAccuracyLow alert fires (exported
    as mlserve_online_accuracy_floor); unset, no model has a floor."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """JSON lines for machines or plain text for people; `auto` is text on a terminal, JSON
    anywhere else (a container, a file, a pipe)."""

    @field_validator("versions", mode="before")
    @classmethod
    def _valid_policy(cls, value: object) -> object:
        return _version_policy(value)

    @field_validator("database_url", "artifact_root", "prediction_log_url", "redis_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: str | None) -> str | None:
        """What redis-py would refuse at the first request, refused at start (checked here
        without importing redis, which every command would pay for)."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"a Redis URL starts with {', '.join(s + '://' for s in REDIS_SCHEMES)}"
                f" (got {parts.scheme + '://' if parts.scheme else 'no scheme'})"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port of the Redis URL is not a number") from None
        return value

    @model_validator(mode="after")
    def _redis_cache_has_redis(self) -> Settings:
        """A model cached in Redis needs a Redis: said at start-up, not at the first request."""
        wanting = sorted(name for name, o in self.models.items() if o.cache == "redis")
        if wanting and self.redis_url is None:
            raise ValueError(
                f"models.{wanting[0]}.cache is redis but redis_url (MLSERVE_REDIS_URL) is not set"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) beat the environment, which beats .env, which beats mlserve.yaml."""
        config_file = init_settings.init_kwargs.pop("_config_file", None)  # type: ignore[attr-defined]  # init source keeps kwargs here
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file or CONFIG_FILE)
        return init_settings, env_settings, dotenv_settings, file_secret_settings, yaml_source

    @property
    def resolved_database_url(self) -> str:
        """The registry URL, defaulting to a SQLite file under `home`."""
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def resolved_prediction_log_url(self) -> str:
        """The prediction log URL, defaulting to a SQLite file under `home`."""
        return self.prediction_log_url or f"sqlite:///{self.home / 'predictions.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        """The artifact root, defaulting to `home`/artifacts."""
        return self.artifact_root or str(self.home / "artifacts")

    def options_for(self, model: str) -> ModelOptions:
        """A model's options; names match case-insensitively (environment names are lower-cased)."""
        if model in self.models:
            return self.models[model]
        lowered = {name.lower(): options for name, options in self.models.items()}
        return lowered.get(model.lower(), ModelOptions())

    def input_rules_for(self, model: str) -> dict[str, str]:
        """A model's input rules (missing_values, unknown_categories, extra_columns): its own
        options where set, else the server-wide ones."""
        options = self.options_for(model)
        return {
            name: getattr(options, name) or getattr(self, name)
            for name in ("missing_values", "unknown_categories", "extra_columns")
        }

    def accuracy_floor_for(self, model: str) -> float | None:
        """A model's online accuracy floor: its own where set, else the server-wide one."""
        own = self.options_for(model).online_accuracy_floor
        return self.online_accuracy_floor if own is None else own

    def version_policy_for(self, model: str) -> VersionPolicy:
        """Which versions of ``model`` a server serves: its own policy where set, else the
        server-wide one."""
        own = self.options_for(model).versions
        return VersionPolicy.parse(own if own is not None else self.versions)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The configured API keys (empty when auth is off)."""
        return _keys(self.api_key)

    @property
    def admin_api_keys(self) -> tuple[str, ...]:
        """The configured admin keys (empty when none is set)."""
        return _keys(self.admin_api_key)


def _version_policy(value: object) -> object:
    """A version policy as given (one number reads as a list of one), checked; raises
    ValueError naming what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str | list):
        VersionPolicy.parse(value)
    return value


def _keys(secret: SecretStr | None) -> tuple[str, ...]:
    if secret is None:
        return ()
    return tuple(k.strip() for k in secret.get_secret_value().split(",") if k.strip())


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from every source; ``overrides`` are command-line flags (None = not given).

    Raises ConfigError with one line per problem instead of pydantic's multi-line report.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    _check_config_file(config_file or Path(CONFIG_FILE))
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(_config_file=config_file, **flags)  # routed to the yaml source
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def _check_config_file(path: Path) -> None:
    """Reject an unreadable mlserve.yaml, or one with keys that are not settings (typos)."""
    if not path.is_file():
        return
    import yaml  # here: most servers and commands run without a settings file

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not valid YAML: {first}") from None
    if content is None:
        return
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must be a mapping of setting: value")
    unknown = sorted(str(k) for k in content if k not in Settings.model_fields)
    if unknown:
        problems = "; ".join(f"{key}: unknown setting in {path}" for key in unknown)
        raise ConfigError(f"invalid settings: {problems}")
