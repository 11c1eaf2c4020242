"""Files of this service are for its own user alone: folders 0700, files 0600."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
UMASK = 0o077


def restrict_to_owner(path: Path, mode: int) -> None:
    """Take group and other access off `path` if it exists, is ours and has any (files written by
    earlier versions were 0644 in a 0755 folder). Never fails: a read-only secret mount stays as is."""
    try:
        info = path.stat()
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not restrict %s to mode %o (%s)", path, mode, type(exc).__name__)


def restrict_sqlite_files(database: str | None) -> None:
    """The database file and its WAL and shared-memory files (SQLite gives those the database's mode)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    for suffix in ("", "-wal", "-shm"):
        restrict_to_owner(Path(database + suffix), PRIVATE_FILE)
