"""The SQL files (``NNNN_*.sql`` migrations and ``queries/``), read as package data.

The repository keeps them in the top-level ``sql/``; ``engine/store/sql`` is a symlink to it,
which a wheel or sdist build follows and stores as real files. So a checkout, an editable
install and a wheel all find them at the same package location, through importlib.resources.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def sql_root() -> Traversable:
    """The package's ``sql`` directory; raises FileNotFoundError naming it when it is absent
    (a broken install, or a checkout made where symlinks are not supported)."""
    root = files("engine.store") / "sql"
    if not (root / "queries").is_dir():
        raise FileNotFoundError(
            f"temu-sync SQL files not found at {root} (a broken install? reinstall the package)"
        )
    return root


def sql_files(directory: Traversable) -> list[Traversable]:
    """The ``*.sql`` files directly in ``directory``, by name."""
    found = [f for f in directory.iterdir() if f.is_file() and f.name.endswith(".sql")]
    return sorted(found, key=lambda f: f.name)
