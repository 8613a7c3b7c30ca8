"""What `mlserve init` writes: a ready project folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.datasets import load_breast_cancer

from mlserve.errors import Conflict
from mlserve.scaffold.kubernetes import DeploySpec, manifest_files
from mlserve.settings import Settings

_TEMPLATES = Path(__file__).parent / "templates"
SAMPLE_DATASET = "data/breast_cancer.csv"
SAMPLE_TARGET = "diagnosis"
MONITORING_FILES = (
    "monitoring/grafana-dashboard.json",
    "monitoring/prometheus-alerts.yml",
    "monitoring/prometheus.yml",
)
"""The Grafana dashboard, the Prometheus alert rules and a scrape configuration that loads them."""


@dataclass(frozen=True, slots=True)
class InitResult:
    """The files `init` wrote, relative to the project folder."""

    folder: Path
    files: list[str]


def env_example() -> str:
    """A `.env.example` listing every setting as MLSERVE_* with its description and default."""
    lines = [
        "# Every mlserve setting, as an environment variable (or a line in .env).",
        "# Precedence: defaults < mlserve.yaml < environment and .env < command-line flags.",
        "",
    ]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "" if default is None else str(default)
        # Descriptions span lines: each needs its own '#', or .env readers take it as a setting.
        lines.extend(f"# {line}".rstrip() for line in (info.description or name).splitlines())
        lines.append(f"# MLSERVE_{name.upper()}={shown}")
        lines.append("")
    return "\n".join(lines)


def sample_dataset() -> pd.DataFrame:
    """scikit-learn's bundled breast cancer data, with snake_case columns and a text target."""
    bunch: Any = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: str(c).replace(" ", "_"))
    frame = frame.drop(columns=["target"])
    frame[SAMPLE_TARGET] = bunch.target.map({0: "malignant", 1: "benign"})
    return pd.DataFrame(frame)


def template_path(name: str) -> Path:
    """Where the packaged template ``name`` (e.g. ``monitoring/prometheus-alerts.yml``) lives."""
    return _TEMPLATES / name


def init_project(folder: Path, *, force: bool = False) -> InitResult:
    """Write mlserve.yaml, .env.example, README.md, monitoring/ (Grafana dashboard, Prometheus
    alert rules and scrape configuration), deploy/ (Kubernetes and KServe manifests for the
    image `mlserve build` makes) and a sample dataset into ``folder``.

    Raises Conflict when a file would be overwritten and ``force`` is false.
    """
    files = {
        "mlserve.yaml": (_TEMPLATES / "mlserve.yaml").read_text(encoding="utf-8"),
        ".env.example": env_example(),
        "README.md": (_TEMPLATES / "README.md").read_text(encoding="utf-8"),
        ".gitignore": ".mlserve/\n.env\n",
    }
    files.update(
        {name: template_path(name).read_text(encoding="utf-8") for name in MONITORING_FILES}
    )
    files.update(manifest_files(DeploySpec(name=_kubernetes_name(folder))))
    targets = [*files, SAMPLE_DATASET]
    existing = [name for name in targets if (folder / name).exists()]
    if existing and not force:
        raise Conflict(f"{folder} already has {', '.join(existing)}; use --force to overwrite")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content, encoding="utf-8")
    sample_dataset().to_csv(folder / SAMPLE_DATASET, index=False)
    return InitResult(folder, targets)


def _kubernetes_name(folder: Path) -> str:
    """The project folder's name as a Kubernetes object name, else ``mlserve``."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder.resolve().name.lower()).strip("-")[:40].strip("-")
    return name or "mlserve"
