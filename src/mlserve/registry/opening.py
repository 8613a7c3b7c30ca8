"""Open the registry that settings name: the one place that turns Settings into a RegistryStore,
so the CLI, the Python SDK and `mlserve serve` open the same registry from the same settings.

It is the registry's only contact with Settings, and it only reads the three values a
RegistryStore takes; the store itself is handed plain values, as every registry component is.
"""

from __future__ import annotations

from mlserve.registry.store import RegistryStore
from mlserve.settings import Settings


def open_registry(settings: Settings) -> RegistryStore:
    """The registry of ``settings``: its database, its artifact root, and a local artifact cache
    under ``home``. The database is migrated on first use; close the store when done."""
    return RegistryStore(
        settings.resolved_database_url,
        settings.resolved_artifact_root,
        cache_dir=settings.home / "cache",
    )
