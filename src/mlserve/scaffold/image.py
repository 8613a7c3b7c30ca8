"""The container image: the packaged Dockerfile, and the build context `mlserve build` writes
(mlserve's sources plus chosen versions baked in as self-describing folders)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlserve.errors import ArtifactError, ConfigError, Conflict
from mlserve.runtimes import RUNTIMES
from mlserve.scaffold.kubernetes import MODEL_DIR

_DEPLOY_TEMPLATES = Path(__file__).parent / "templates" / "deploy"
SOURCE_FILES = ("pyproject.toml", "README.md", "requirements.lock")
"""What the Dockerfile's build stage copies beside src/."""
BAKED_STAGE = f"""
# Added by `mlserve build`: the chosen versions as self-describing folders, owned by root and
# only readable by the server, which serves them with no database.
FROM runtime
COPY models/ {MODEL_DIR}/
CMD ["serve", "--model-dir={MODEL_DIR}"]
"""


@dataclass(frozen=True, slots=True)
class BakedVersion:
    """A registered version to bake in: its name, number, framework and verified local folder."""

    name: str
    version: int
    framework: str
    folder: Path


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """How to build the image: its tag, base image, an optional CA bundle for pip and the
    mlserve extras to install (the Dockerfile's EXTRAS; empty keeps its default)."""

    tag: str
    base: str | None = None
    ca_bundle: Path | None = None
    extras: tuple[str, ...] = ()


def dockerfile() -> str:
    """The packaged Dockerfile (the repository's `Dockerfile` is a link to it)."""
    return (_DEPLOY_TEMPLATES / "Dockerfile").read_text(encoding="utf-8")


def default_extras() -> tuple[str, ...]:
    """The extras the Dockerfile installs when given none (its ``ARG EXTRAS=`` line, the one
    place that says what the generic image can reach)."""
    found = re.search(r"^ARG EXTRAS=(\S*)$", dockerfile(), flags=re.MULTILINE)
    if found is None:
        raise ConfigError("the packaged Dockerfile declares no ARG EXTRAS")
    return tuple(extra for extra in found.group(1).split(",") if extra)


def image_extras(frameworks: Iterable[str]) -> tuple[str, ...]:
    """The extras an image serving models of ``frameworks`` needs: the Dockerfile's default
    ones, then each framework's runtime extra (none for scikit-learn and custom Python).

    Raises ArtifactError for a framework no runtime serves.
    """
    extras = list(default_extras())
    for framework in frameworks:
        spec = RUNTIMES.get(framework)
        if spec is None:
            raise ArtifactError(
                f"no runtime for framework {framework!r} (known: {', '.join(sorted(RUNTIMES))})"
            )
        if spec.extra is not None and spec.extra not in extras:
            extras.append(spec.extra)
    return tuple(extras)


def source_checkout() -> Path:
    """The mlserve checkout this package runs from (what the image installs).

    Raises ConfigError when mlserve was installed from a wheel, without its project files.
    """
    root = Path(__file__).resolve().parents[3]
    missing = [name for name in SOURCE_FILES if not (root / name).is_file()]
    if missing or not (root / "src" / "mlserve" / "__init__.py").is_file():
        raise ConfigError(
            "building an image needs mlserve's source checkout (pyproject.toml, "
            f"requirements.lock, src/); this mlserve runs from {root}, which lacks "
            f"{', '.join(missing) or 'src/mlserve'}: install it from a clone with pip install -e"
        )
    return root


def write_build_context(context: Path, source: Path, versions: list[BakedVersion]) -> None:
    """Write a build context into ``context`` (created; refused if it holds anything else).

    Models go to ``models/NAME/VERSION/``, readable by everyone (registry files may be 0600).
    Raises Conflict when ``context`` exists and is not an earlier build context.
    """
    if context.exists() and any(context.iterdir()):
        if not (context / "Dockerfile").is_file() or not (context / "models").is_dir():
            raise Conflict(f"{context} is not empty and not an mlserve build context")
        shutil.rmtree(context)
    context.mkdir(parents=True, exist_ok=True)
    for name in SOURCE_FILES:
        shutil.copy2(source / name, context / name)
    shutil.copytree(
        source / "src" / "mlserve",
        context / "src" / "mlserve",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (context / "Dockerfile").write_text(dockerfile() + BAKED_STAGE, encoding="utf-8")
    (context / ".dockerignore").write_text(
        (_DEPLOY_TEMPLATES / "dockerignore").read_text(encoding="utf-8"), encoding="utf-8"
    )
    models = context / "models"
    models.mkdir()
    for version in versions:
        shutil.copytree(version.folder, models / version.name / str(version.version))
    _make_readable(models)


def _make_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        path.chmod(mode | extra)


def build_command(engine: str, context: Path, options: BuildOptions) -> list[str]:
    """The command that builds ``context`` with ``engine`` (`podman` or `docker`)."""
    command = [engine, "build"]
    if engine == "podman":
        command += ["--format", "docker"]  # the OCI format drops HEALTHCHECK
    command += ["--tag", options.tag]
    if options.base:
        command += ["--build-arg", f"BASE={options.base}"]
    if options.extras:
        command += ["--build-arg", f"EXTRAS={','.join(options.extras)}"]
    if options.ca_bundle:
        command += ["--secret", f"id=ca,src={options.ca_bundle}"]
    return [*command, str(context)]


def find_engine() -> str | None:
    """`podman` if installed, else `docker` if its daemon answers, else None."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker"):
        answered = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=20, check=False
        ).returncode
        if answered == 0:
            return "docker"
    return None
