"""Models that are folders (an MLflow model, a custom Python model's code and files) travel as
one zip file, so the registry, the artifact store, sha256 checks and ``--model-dir`` treat them
like any model file.

The zip is deterministic (sorted entries, fixed timestamps), so the same folder registers with
the same sha256. Loading unpacks it once per machine into a cache keyed by that sha256, which
only ever holds verified content.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from mlserve.errors import ArtifactError, InvalidInput

ARCHIVE_SUFFIX = ".zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIPPED = frozenset({"__pycache__", ".git", ".ipynb_checkpoints"})


def pack_folder(folder: Path, archive: Path) -> Path:
    """Write ``folder``'s files (not caches nor VCS folders) into the zip ``archive``."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not _SKIPPED.intersection(path.relative_to(folder).parts)
    )
    if not files:
        raise InvalidInput(f"{folder} holds no files")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zipped.writestr(info, path.read_bytes())
    return archive


def unpacked(archive: Path, sha256: str) -> Path:
    """The folder ``archive`` (whose verified sha256 is ``sha256``) unpacks to, unpacking it
    first if no process on this machine has. Raises ArtifactError for a broken zip or one whose
    entries would land outside the folder."""
    root = Path(os.environ.get("MLSERVE_UNPACK_DIR") or Path(tempfile.gettempdir()) / "mlserve")
    root.mkdir(parents=True, exist_ok=True)
    target = root / sha256
    if target.is_dir():
        return target
    with FileLock(str(root / f"{sha256}.lock")):
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=root))
        try:
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    destination = (staging / name).resolve()
                    if not destination.is_relative_to(staging.resolve()):
                        raise ArtifactError(f"{archive.name}: entry {name!r} leaves its folder")
                zipped.extractall(staging)
        except (zipfile.BadZipFile, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactError(f"cannot unpack {archive.name}: {exc}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.rename(target)
    return target
