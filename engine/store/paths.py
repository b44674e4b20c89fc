"""Where the SQL files live, in a checkout and in an installed copy."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TEMU_SYNC_SQL_DIR"


def sql_dir() -> Path:
    """The directory holding ``NNNN_*.sql`` migrations and ``queries/``.

    Order: ``$TEMU_SYNC_SQL_DIR`` (packagers, tests); ``engine/store/sql``, which is a symlink
    to the repository's ``sql/`` in a checkout and a real directory in a wheel (package-data
    follows the link); the repository's top-level ``sql/`` (when the link is lost, e.g. on a
    filesystem without symlinks).
    """
    override = os.environ.get(ENV_VAR)
    candidates = [Path(override)] if override else []
    here = Path(__file__).parent
    candidates += [here / "sql", here.parent.parent / "sql"]
    for c in candidates:
        if (c / "queries").is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"temu-sync SQL files not found (tried {tried})")
