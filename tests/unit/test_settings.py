"""Settings: defaults < mlserve.yaml < .env < environment < flags, and one-line errors."""

from __future__ import annotations

import itertools
import os
from importlib.resources import files
from pathlib import Path

import pytest

from mlserve.errors import ConfigError
from mlserve.scaffold.project import env_example
from mlserve.settings import Settings, load_settings

LAYERS = ("yaml", "dotenv", "env", "flag")
PORTS = {"yaml": 9001, "dotenv": 9002, "env": 9003, "flag": 9004}
DEFAULT_PORT = 8080


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no MLSERVE_* variables in the environment."""
    for key in os.environ:
        if key.upper().startswith("MLSERVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_apply_without_any_source(project_dir: Path) -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.port == DEFAULT_PORT
    assert settings.home == Path(".mlserve")
    assert settings.resolved_database_url == "sqlite:///.mlserve/registry.db"
    assert settings.resolved_artifact_root == str(Path(".mlserve") / "artifacts")
    assert settings.api_keys == ()
    assert settings.safe_loading is False


@pytest.mark.parametrize(
    "present",
    list(itertools.product([False, True], repeat=len(LAYERS))),
    ids=lambda combo: (
        "+".join(layer for layer, on in zip(LAYERS, combo, strict=True) if on) or "none"
    ),
)
def test_each_source_beats_the_ones_below_it(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[bool, ...]
) -> None:
    layers = {layer for layer, on in zip(LAYERS, present, strict=True) if on}
    if "yaml" in layers:
        (project_dir / "mlserve.yaml").write_text(f"port: {PORTS['yaml']}\n")
    if "dotenv" in layers:
        (project_dir / ".env").write_text(f"MLSERVE_PORT={PORTS['dotenv']}\n")
    if "env" in layers:
        monkeypatch.setenv("MLSERVE_PORT", str(PORTS["env"]))
    flags = {"port": PORTS["flag"]} if "flag" in layers else {}

    settings = load_settings(**flags)

    winner = max(layers, key=LAYERS.index, default=None)
    assert settings.port == (PORTS[winner] if winner else DEFAULT_PORT)


def test_sources_merge_field_by_field(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project_dir / "mlserve.yaml").write_text("host: 0.0.0.0\nport: 9001\nmax_batch_size: 8\n")
    (project_dir / ".env").write_text("MLSERVE_PORT=9002\nMLSERVE_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("MLSERVE_LOG_LEVEL", "WARNING")
    settings = load_settings(max_batch_size=16)
    assert settings.host == "0.0.0.0"  # only in yaml
    assert settings.port == 9002  # .env over yaml
    assert settings.log_level == "WARNING"  # environment over .env
    assert settings.max_batch_size == 16  # flag over yaml


def test_flags_given_as_none_do_not_override(project_dir: Path) -> None:
    (project_dir / "mlserve.yaml").write_text("port: 9001\nhost: 0.0.0.0\n")
    settings = load_settings(port=None, host=None)
    assert (settings.port, settings.host) == (9001, "0.0.0.0")


def test_explicit_config_file_replaces_the_one_in_the_working_directory(
    project_dir: Path,
) -> None:
    (project_dir / "mlserve.yaml").write_text("port: 9001\nhost: 10.0.0.1\n")
    other = project_dir / "conf" / "staging.yaml"
    other.parent.mkdir()
    other.write_text("port: 7000\n")
    settings = load_settings(other)
    assert settings.port == 7000
    assert settings.host == "127.0.0.1"


def test_missing_explicit_config_file_is_a_config_error(project_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist"):
        load_settings(project_dir / "nope.yaml")


def test_environment_values_are_parsed_to_field_types(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_SAFE_LOADING", "true")
    monkeypatch.setenv("MLSERVE_MAX_BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv("MLSERVE_HOME", "/srv/mlserve")
    monkeypatch.setenv("MLSERVE_UNKNOWN_CATEGORIES", "accept")
    settings = load_settings()
    assert settings.safe_loading is True
    assert settings.max_batch_wait_ms == 0.5
    assert settings.home == Path("/srv/mlserve")
    assert settings.unknown_categories == "accept"
    assert settings.resolved_database_url == "sqlite:////srv/mlserve/registry.db"


def test_blank_database_url_and_artifact_root_mean_unset(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_DATABASE_URL", "")
    monkeypatch.setenv("MLSERVE_ARTIFACT_ROOT", "")
    settings = load_settings(home=Path("data"))
    assert settings.database_url is None
    assert settings.artifact_root is None
    assert settings.resolved_database_url == "sqlite:///data/registry.db"
    assert settings.resolved_artifact_root == str(Path("data") / "artifacts")


def test_explicit_urls_win_over_home(project_dir: Path) -> None:
    settings = load_settings(database_url="postgresql+psycopg://db/x", artifact_root="s3://b/m")
    assert settings.resolved_database_url == "postgresql+psycopg://db/x"
    assert settings.resolved_artifact_root == "s3://b/m"


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("yaml", "port"),
        ("env", "port"),
        ("flag", "port"),
        ("yaml", "workers"),
        ("env", "log_level"),
        ("flag", "missing_values"),
        ("yaml", "max_request_bytes"),
        ("yaml", "no_such_setting"),
    ],
)
def test_invalid_values_give_a_one_line_config_error_naming_the_field(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, source: str, field: str
) -> None:
    bad = {
        "port": "70000",
        "workers": "0",
        "log_level": "LOUD",
        "missing_values": "sometimes",
        "max_request_bytes": "10",
        "no_such_setting": "1",
    }[field]
    flags: dict[str, str] = {}
    if source == "yaml":
        (project_dir / "mlserve.yaml").write_text(f"{field}: {bad}\n")
    elif source == "env":
        monkeypatch.setenv(f"MLSERVE_{field.upper()}", bad)
    else:
        flags[field] = bad
    with pytest.raises(ConfigError) as caught:
        load_settings(**flags)
    message = str(caught.value)
    assert message.startswith(f"invalid settings: {field}: ")
    assert "\n" not in message


def test_every_problem_is_reported_at_once(project_dir: Path) -> None:
    (project_dir / "mlserve.yaml").write_text("port: -1\nworkers: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "port: " in str(caught.value)
    assert "workers: " in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("only-one", ("only-one",)),
        ("a,b,c", ("a", "b", "c")),
        (" a , b ,, c ,", ("a", "b", "c")),
        (",", ()),
    ],
)
def test_api_key_is_split_on_commas(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, raw: str, keys: tuple[str, ...]
) -> None:
    monkeypatch.setenv("MLSERVE_API_KEY", raw)
    assert load_settings().api_keys == keys


def test_api_key_is_not_shown_when_settings_are_printed(project_dir: Path) -> None:
    settings = load_settings(api_key="s3cret-key")
    assert settings.api_keys == ("s3cret-key",)
    assert "s3cret-key" not in repr(settings)
    assert "s3cret-key" not in str(settings.model_dump())


def test_settings_are_frozen(project_dir: Path) -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]  # checking that assignment is refused


def test_project_template_config_loads(project_dir: Path) -> None:
    template = files("mlserve.scaffold") / "templates" / "mlserve.yaml"
    (project_dir / "mlserve.yaml").write_text(template.read_text(encoding="utf-8"))
    settings = load_settings()
    assert settings.port == 8080
    assert settings.log_format == "auto"


# -- .env sharing and malformed YAML ------------------------------------------------------


def test_unrelated_variables_in_dotenv_are_ignored(project_dir: Path) -> None:
    # A project's .env is shared with other tools (docker compose, the app's own code).
    (project_dir / ".env").write_text("MLSERVE_PORT=9002\nPOSTGRES_PASSWORD=x\n")
    assert load_settings().port == 9002


@pytest.mark.parametrize("content", ["port: [\n", "- 1\n- 2\n"])
def test_malformed_yaml_is_a_config_error(project_dir: Path, content: str) -> None:
    (project_dir / "mlserve.yaml").write_text(content)
    with pytest.raises(ConfigError):
        load_settings()


def test_env_example_is_all_comments_and_the_repository_copy_is_current() -> None:
    text = env_example()
    stray = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert stray == []  # a description line without '#' would read as a setting in .env
    for name in Settings.model_fields:
        assert f"# MLSERVE_{name.upper()}=" in text
    repository_copy = Path(__file__).parents[2] / ".env.example"
    assert repository_copy.read_text() == text + "\n"


def test_an_accuracy_floor_per_model_overrides_the_server_wide_one(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().accuracy_floor_for("churn") is None
    monkeypatch.setenv("MLSERVE_ONLINE_ACCURACY_FLOOR", "0.7")
    monkeypatch.setenv("MLSERVE_MODELS__CHURN__ONLINE_ACCURACY_FLOOR", "0.9")
    settings = load_settings()
    assert settings.accuracy_floor_for("churn") == 0.9
    assert settings.accuracy_floor_for("fraud") == 0.7
    monkeypatch.setenv("MLSERVE_ONLINE_ACCURACY_FLOOR", "1.5")
    with pytest.raises(ConfigError, match="online_accuracy_floor"):
        load_settings()
