"""Plain data shared by every layer: model references, signatures and version manifests."""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlserve.errors import ArtifactError, ArtifactIntegrityError, InvalidReference

Task = Literal["classification", "regression"]
FeatureKind = Literal["numeric", "categorical", "boolean"]

MANIFEST_FILE = "mlserve.json"
"""Name of the self-describing manifest in every version's artifact folder."""

MANIFEST_FORMAT = 1
"""Version of the manifest layout; bump it when fields change meaning."""

MAX_CATEGORIES = 1000
"""Most distinct values a signature records for a categorical feature; a feature that had more
in training has an open set of categories (none is unknown)."""

DEFAULT_ALIAS = "production"
"""The alias a bare model name resolves to when it is set."""

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_REF = re.compile(rf"^(?P<name>{_NAME})(?::(?P<version>\d+)|@(?P<alias>{_NAME}))?$")
_NAME_RE = re.compile(rf"^{_NAME}$")


def check_name(value: str, what: str = "model name") -> str:
    """Return ``value`` if it is a valid model or alias name, else raise InvalidReference."""
    if not _NAME_RE.fullmatch(value):  # not match(): `$` also matches before a final newline
        raise InvalidReference(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return value


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A reference to a model version: ``churn``, ``churn:3`` or ``churn@production``.

    A bare name means the ``production`` alias when it is set, else the latest version.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse a reference; raises InvalidReference naming what is wrong."""
        match = _REF.match(text.strip())
        if not match:
            raise InvalidReference(
                f"invalid model reference {text!r}: expected NAME, NAME:VERSION or NAME@ALIAS"
            )
        version = match["version"]
        if version is not None and int(version) < 1:
            raise InvalidReference(f"invalid model reference {text!r}: versions start at 1")
        return cls(match["name"], int(version) if version else None, match["alias"])

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model a server serves beside what its followed references point at.

    ``aliases`` (the default): every version any alias of the model points at; ``latest N``:
    those and the newest N; ``all``: every registered version; a list of numbers: those and
    the aliased ones. Each served version answers at /v2/models/NAME/versions/N.
    """

    kind: Literal["aliases", "latest", "all", "listed"] = "aliases"
    count: int = 0
    listed: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: str | Sequence[int]) -> VersionPolicy:
        """Read ``aliases``, ``all``, ``latest N``, ``1,3`` or a list of numbers; raises
        ValueError naming what is wrong."""
        if not isinstance(value, str):
            return cls._listed([str(v) for v in value], value)
        text = value.strip().lower()
        if text in ("aliases", "all"):
            return cls(text)  # type: ignore[arg-type]  # narrowed by the test above
        words = text.split()
        if len(words) == 2 and words[0] == "latest" and words[1].isdigit() and int(words[1]) > 0:
            return cls("latest", count=int(words[1]))
        return cls._listed(text.strip("[]").split(","), value)

    @classmethod
    def _listed(cls, items: Sequence[str], original: object) -> VersionPolicy:
        numbers = [item.strip() for item in items]
        if not numbers or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise ValueError(
                f"invalid version policy {original!r}: expected 'aliases', 'all', "
                "'latest N' or version numbers such as '1,3'"
            )
        return cls("listed", listed=tuple(sorted({int(n) for n in numbers})))

    def select(self, registered: Sequence[int], aliased: Iterable[int]) -> list[int]:
        """The versions to serve out of ``registered``, newest first."""
        chosen = set(aliased)
        if self.kind == "all":
            chosen.update(registered)
        elif self.kind == "latest":
            chosen.update(sorted(registered)[-self.count :])
        elif self.kind == "listed":
            chosen.update(self.listed)
        return sorted(chosen & set(registered), reverse=True)

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest {self.count}"
        if self.kind == "listed":
            return ",".join(str(v) for v in self.listed)
        return self.kind


@dataclass(frozen=True, slots=True)
class Feature:
    """One input column: its name, dtype, kind and (for categoricals) the values seen in training."""

    name: str
    dtype: str
    kind: FeatureKind = "numeric"
    categories: tuple[str, ...] = ()
    nullable: bool = True

    @property
    def has_closed_categories(self) -> bool:
        """True for a categorical feature whose every training category is recorded, so a
        value outside them is one training never saw."""
        return self.kind == "categorical" and 0 < len(self.categories) < MAX_CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = asdict(self)
        data["categories"] = list(self.categories)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feature:
        """Build from the dict written by :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            kind=data.get("kind", "numeric"),
            categories=tuple(str(c) for c in data.get("categories", ())),
            nullable=bool(data.get("nullable", True)),
        )


def current_actor() -> str:
    """Who is acting (the OS user), for audit trails; "unknown" without a passwd entry, as in
    some containers."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def default_feature_names(count: int) -> list[str]:
    """The names a model that names no features gets at registration: f0, f1, …"""
    return [f"f{i}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model takes and gives: ordered input features, outputs, task and class labels."""

    inputs: tuple[Feature, ...]
    task: Task | None = None
    outputs: tuple[str, ...] = ("predict",)
    classes: tuple[Any, ...] = ()
    target: str | None = None

    @property
    def feature_names(self) -> list[str]:
        """Input feature names in signature order."""
        return [f.name for f in self.inputs]

    @property
    def is_all_numeric(self) -> bool:
        """True when every input is numeric or boolean (a 2-D numeric tensor can carry them)."""
        return all(f.kind != "categorical" for f in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "inputs": [f.to_dict() for f in self.inputs],
            "task": self.task,
            "outputs": list(self.outputs),
            "classes": list(self.classes),
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """Build from the dict written by :meth:`to_dict`."""
        return cls(
            inputs=tuple(Feature.from_dict(f) for f in data.get("inputs", [])),
            task=data.get("task"),
            outputs=tuple(data.get("outputs", ("predict",))),
            classes=tuple(data.get("classes", ())),
            target=data.get("target"),
        )


@dataclass(frozen=True, slots=True)
class VersionManifest:
    """The content of ``mlserve.json``: everything needed to serve a version without a database."""

    name: str
    version: int
    framework: str
    model_file: str
    sha256: str
    signature: Signature
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    data_fingerprint: str | None = None
    reference_profile: dict[str, Any] | None = None
    mlserve_version: str = ""
    format: int = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["signature"] = self.signature.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionManifest:
        """Build from a parsed ``mlserve.json``."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["signature"] = Signature.from_dict(data.get("signature", {}))
        return cls(**fields)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> VersionManifest:
    """Read ``mlserve.json`` from a version folder; raises ArtifactError when absent or broken."""
    path = folder / MANIFEST_FILE
    try:
        return VersionManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ArtifactError(
            f"{folder} is not a model version folder: {MANIFEST_FILE} is missing"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON of the wrong shape
        raise ArtifactError(f"{path} is not a valid manifest: {exc}") from None


def verify_artifact(folder: Path, expected_sha256: str | None = None) -> VersionManifest:
    """Check that the model file in ``folder`` matches its manifest (and ``expected_sha256``).

    Returns the manifest; raises ArtifactIntegrityError on any mismatch, ArtifactError when the
    model file is missing.
    """
    manifest = read_manifest(folder)
    model_path = folder / manifest.model_file
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = file_sha256(model_path)
    for expected in filter(None, (manifest.sha256, expected_sha256)):
        if actual != expected:
            raise ArtifactIntegrityError(str(model_path), expected, actual)
    return manifest
