"""SHA-256 of data files, remembered by path, size and modification time so a launch does not re-read them."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's contents, streamed (a CT volume need not fit in memory twice)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


class ChecksumCache:
    """File digests kept in SQLite under the data cache, reused while a file's size and mtime are unchanged.

    A study's provenance record hashes every image and label it reads; at hundreds of hospitals of
    real CT that is hundreds of gigabytes, read again at every launch without this. The same size and
    modification-time rule decides when a preprocessed case is redone. Concurrent studies share the
    file safely (SQLite); `None` as the location keeps nothing and hashes every file.
    """

    def __init__(self, location: Path | None) -> None:
        self.location = location
        self._known: dict[str, tuple[int, int, bytes]] = {}
        self._new: list[tuple[str, int, int, bytes]] = []
        if location is not None and location.exists():
            with self._connect() as db:
                self._known = {p: (s, m, d) for p, s, m, d in db.execute("SELECT path, size, mtime_ns, digest FROM files")}

    def digest(self, path: Path) -> bytes:
        """SHA-256 of `path`, from the cache when the file is unchanged."""
        key = os.path.abspath(path)
        stat = os.stat(key)
        known = self._known.get(key)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = file_digest(Path(key))
        self._known[key] = (stat.st_size, stat.st_mtime_ns, digest)
        self._new.append((key, stat.st_size, stat.st_mtime_ns, digest))
        return digest

    def save(self) -> None:
        """Write the digests computed since the last save."""
        if self.location is None or not self._new:
            return
        self.location.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", self._new)
        self._new = []

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is closed either way (sqlite3's own `with` only commits)."""
        db = sqlite3.connect(self.location, timeout=60)
        try:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, digest BLOB)"
                )
                yield db
        finally:
            db.close()
