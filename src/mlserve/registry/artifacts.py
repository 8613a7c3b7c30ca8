"""Artifact storage: a local folder by default, any fsspec URL (s3://, gs://, memory://…) otherwise.

Each version lives in ``<root>/<model>/<version>/`` as the model file plus ``mlserve.json``, so a
folder of versions can be served with no database.

A remote root is reached with its fsspec backend's own configuration, read from the environment:
for S3, botocore's standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ENDPOINT_URL, AWS_MAX_ATTEMPTS, …) and fsspec's FSSPEC_S3_* options. Whatever the store
answers when it cannot serve us becomes one ArtifactError naming the bucket or the store's URL.

Each node downloads a version once: the copy goes to its cache folder, keyed by the version's
URI and sha256, only after its sha256 matched; later loads on that node (any process sharing the
folder) read it from there, even while the store is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from filelock import FileLock
from fsspec.implementations.local import LocalFileSystem

from mlserve.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactStoreUnavailable,
    ConfigError,
)
from mlserve.types import MANIFEST_FILE, VersionManifest, file_sha256

log = logging.getLogger(__name__)

_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
"""Object stores whose first path segment is a bucket (or container) that must exist."""
_EXTRAS = {"s3": "mlserve[s3]", "s3a": "mlserve[s3]"}
"""The extra that installs a protocol's fsspec backend."""


class ArtifactStore:
    """Puts version folders under a root URL and brings them back as local folders."""

    def __init__(self, root: str, cache_dir: Path) -> None:
        """Raises ConfigError when the root's protocol is unknown or its backend not installed;
        nothing is asked of a remote store yet."""
        self._fs, self._root = _open(root)
        self._is_local = isinstance(self._fs, LocalFileSystem)
        if self._is_local:
            self._root = str(Path(self._root).resolve())
        self._cache_dir = cache_dir

    @property
    def is_local(self) -> bool:
        """True when artifacts live on this machine's file system."""
        return self._is_local

    @property
    def root_url(self) -> str:
        """The root as a URL (a plain path when local)."""
        return self._root if self._is_local else str(self._fs.unstrip_protocol(self._root))

    def version_uri(self, name: str, version: int) -> str:
        """The URI of a version's folder."""
        path = f"{self._root}/{name}/{version}"
        return path if self._is_local else self._fs.unstrip_protocol(path)

    def check(self) -> None:
        """Raise ArtifactError unless the root's bucket exists and answers (a no-op for folders
        and stores without buckets). Blocks while the backend retries an unreachable store."""
        if not self._is_local:
            _check_bucket(self._fs, self._root, self.root_url)

    def put_version(self, model_path: Path, manifest: VersionManifest) -> str:
        """Copy the model file and write the manifest; return the folder's URI.

        Raises ArtifactError when a remote store refuses or cannot be reached.
        """
        uri = self.version_uri(manifest.name, manifest.version)
        manifest_bytes = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode()
        if self._is_local:
            folder = Path(uri)
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_copy(model_path, folder / manifest.model_file)
            _atomic_write(folder / MANIFEST_FILE, manifest_bytes)
            return uri
        path = f"{self._root}/{manifest.name}/{manifest.version}"
        try:
            if not _has_buckets(self._fs):  # object stores have no folders: s3fs would create
                self._fs.makedirs(path, exist_ok=True)  # a missing bucket here instead
            self._fs.put_file(str(model_path), f"{path}/{manifest.model_file}")
            self._fs.pipe_file(f"{path}/{MANIFEST_FILE}", manifest_bytes)
        except Exception as exc:  # the backend's own errors: botocore's, aiohttp's, OSError…
            raise _unavailable(self.root_url, exc) from exc
        return uri

    def local_folder(self, uri: str, model_file: str, sha256: str) -> Path:
        """A local folder holding the version: the folder itself, or the node's cached copy.

        A missing copy is downloaded under a file lock (other processes of this node wait for
        it rather than download it again) into a temporary folder, checked against ``sha256``
        and renamed into place, so the cache never holds a partial or altered file. Raises
        ArtifactIntegrityError when the download does not match, ArtifactError when the store
        cannot be reached or lacks the files.
        """
        if self._is_local or "://" not in uri:
            folder = Path(uri)
            if not folder.is_dir():
                raise ArtifactError(f"artifact folder {uri} does not exist")
            return folder
        # Not sha256 alone: versions may share a model file but each has its own manifest.
        key = hashlib.sha256(f"{uri}\n{sha256}".encode()).hexdigest()
        target = self._cache_dir / key
        if (target / MANIFEST_FILE).is_file():
            return target
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self._cache_dir / f".{key}.lock"):
            if (target / MANIFEST_FILE).is_file():  # downloaded while we waited
                return target
            staging = Path(tempfile.mkdtemp(dir=self._cache_dir, prefix=".download-"))
            try:
                _download(uri, (model_file, MANIFEST_FILE), staging)
                actual = file_sha256(staging / model_file)
                if actual != sha256:
                    raise ArtifactIntegrityError(f"{uri}/{model_file}", sha256, actual)
                # A process without this lock (an older mlserve) may have finished it first.
                with contextlib.suppress(OSError):
                    staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        log.info("artifact downloaded", extra={"uri": uri, "cache": str(target)})
        return target

    def delete_version(self, uri: str) -> None:
        """Remove a version folder (used to clean up a registration that failed); a remote
        store that cannot be reached leaves it, with a warning."""
        if self._is_local or "://" not in uri:
            shutil.rmtree(uri, ignore_errors=True)
            return
        fs, path = _open(uri)
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception as exc:  # best effort: the registration's own error matters more
            log.warning("artifact clean-up failed", extra={"uri": uri, "error": _one_line(exc)})


def _open(url: str) -> tuple[Any, str]:
    """fsspec's file system and path for ``url``; ConfigError when it cannot be used."""
    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]  # fsspec is untyped
    except ImportError as exc:  # the protocol's backend (s3fs, gcsfs…) is not installed
        extra = _EXTRAS.get(url.split("://", 1)[0])
        hint = f" (pip install '{extra}')" if extra else ""
        raise ConfigError(f"artifact store {url} cannot be used: {exc}{hint}") from exc
    except ValueError as exc:  # "Protocol not known: …"
        raise ConfigError(f"artifact store {url} cannot be used: {exc}") from exc


def _has_buckets(fs: Any) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & _BUCKET_PROTOCOLS)


def _check_bucket(fs: Any, path: str, url: str) -> None:
    """Raise ArtifactError unless the bucket ``path`` starts with exists and answers."""
    if not _has_buckets(fs):
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.info(bucket)
    except FileNotFoundError as exc:
        raise ArtifactError(f"bucket {bucket!r} of artifact store {url} does not exist") from exc
    except Exception as exc:  # the backend's own errors: botocore's, aiohttp's, OSError…
        raise _unavailable(url, exc) from exc


def _download(uri: str, names: tuple[str, ...], folder: Path) -> None:
    """Copy the files ``names`` of the version folder ``uri`` into ``folder``."""
    fs, path = _open(uri)
    for name in names:
        try:
            fs.get_file(f"{path}/{name}", str(folder / name))
        except FileNotFoundError as exc:  # the file, or the whole bucket, is gone
            _check_bucket(fs, path, uri)
            raise ArtifactError(f"artifact {uri} is incomplete: {name} is missing") from exc
        except Exception as exc:  # the backend's own errors: botocore's, aiohttp's, OSError…
            raise _unavailable(uri, exc) from exc


def _unavailable(url: str, exc: Exception) -> ArtifactStoreUnavailable:
    """The one-line error for a store that did not do what was asked."""
    return ArtifactStoreUnavailable(f"artifact store {url} is not available: {_one_line(exc)}")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
