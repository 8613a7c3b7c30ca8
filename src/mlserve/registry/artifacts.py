"""Artifact storage: a local folder by default, any fsspec URL (s3://, gs://, memory://…) otherwise.

Each version lives in ``<root>/<model>/<version>/`` as the model file plus ``mlserve.json``, so a
folder of versions can be served with no database.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mlserve.errors import ArtifactError
from mlserve.types import MANIFEST_FILE, VersionManifest


class ArtifactStore:
    """Puts version folders under a root URL and brings them back as local folders."""

    def __init__(self, root: str, cache_dir: Path) -> None:
        self._fs, self._root = fsspec.core.url_to_fs(root)
        self._is_local = isinstance(self._fs, LocalFileSystem)
        if self._is_local:
            self._root = str(Path(self._root).resolve())
        self._cache_dir = cache_dir

    @property
    def is_local(self) -> bool:
        """True when artifacts live on this machine's file system."""
        return self._is_local

    def version_uri(self, name: str, version: int) -> str:
        """The URI of a version's folder."""
        path = f"{self._root}/{name}/{version}"
        return path if self._is_local else self._fs.unstrip_protocol(path)

    def put_version(self, model_path: Path, manifest: VersionManifest) -> str:
        """Copy the model file and write the manifest; return the folder's URI."""
        uri = self.version_uri(manifest.name, manifest.version)
        manifest_bytes = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode()
        if self._is_local:
            folder = Path(uri)
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_copy(model_path, folder / manifest.model_file)
            _atomic_write(folder / MANIFEST_FILE, manifest_bytes)
        else:
            _, path = fsspec.core.url_to_fs(uri)
            self._fs.makedirs(path, exist_ok=True)
            self._fs.put_file(str(model_path), f"{path}/{manifest.model_file}")
            self._fs.pipe_file(f"{path}/{MANIFEST_FILE}", manifest_bytes)
        return uri

    def local_folder(self, uri: str, model_file: str, sha256: str) -> Path:
        """A local folder holding the version: the folder itself, or a cached download.

        The cache is keyed by URI and sha256, so a stale or partial download is never reused:
        files are downloaded into a temporary folder and renamed into place.
        """
        if self._is_local or "://" not in uri:
            folder = Path(uri)
            if not folder.is_dir():
                raise ArtifactError(f"artifact folder {uri} does not exist")
            return folder
        # Not sha256 alone: versions may share a model file but each has its own manifest.
        target = self._cache_dir / hashlib.sha256(f"{uri}\n{sha256}".encode()).hexdigest()
        if (target / MANIFEST_FILE).is_file():
            return target
        fs, path = fsspec.core.url_to_fs(uri)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self._cache_dir, prefix=".download-"))
        try:
            for name in (model_file, MANIFEST_FILE):
                fs.get_file(f"{path}/{name}", str(staging / name))
        except FileNotFoundError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactError(f"artifact {uri} is incomplete: {exc}") from None
        try:
            staging.rename(target)
        except OSError:  # another process finished the same download first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def delete_version(self, uri: str) -> None:
        """Remove a version folder (used to clean up a registration that failed)."""
        if self._is_local or "://" not in uri:
            shutil.rmtree(uri, ignore_errors=True)
        else:
            fs, path = fsspec.core.url_to_fs(uri)
            if fs.exists(path):
                fs.rm(path, recursive=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
