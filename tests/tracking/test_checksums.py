"""File digests remembered by path, size and modification time: reused while a file is unchanged, redone after."""

from __future__ import annotations

import hashlib
import os

import pytest

import fedray.tracking.checksums as checksums
from fedray.tracking.checksums import ChecksumCache


def test_digests_are_remembered_across_launches_until_the_file_changes(tmp_path, monkeypatch):
    image = tmp_path / "case.nii.gz"
    image.write_bytes(b"voxels" * 1000)
    database = tmp_path / "cache" / "checksums.sqlite"
    first = ChecksumCache(database)
    assert first.digest(image) == hashlib.sha256(image.read_bytes()).digest()
    first.save()

    def read_again(path):
        raise AssertionError(f"read {path} again")

    monkeypatch.setattr(checksums, "file_digest", read_again)
    assert ChecksumCache(database).digest(image) == hashlib.sha256(b"voxels" * 1000).digest()  # a later launch

    image.write_bytes(b"other voxels" * 1000)  # edited: new size and modification time
    with pytest.raises(AssertionError, match="read .* again"):
        ChecksumCache(database).digest(image)
    monkeypatch.undo()
    edited = ChecksumCache(database)
    assert edited.digest(image) == hashlib.sha256(b"other voxels" * 1000).digest()
    edited.save()

    monkeypatch.setattr(checksums, "file_digest", read_again)
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, but touched: read again
    with pytest.raises(AssertionError, match="read .* again"):
        ChecksumCache(database).digest(image)


def test_without_a_location_nothing_is_kept(tmp_path):
    image = tmp_path / "case.nii.gz"
    image.write_bytes(b"voxels")
    cache = ChecksumCache(None)
    assert cache.digest(image) == hashlib.sha256(b"voxels").digest()
    cache.save()
    assert list(tmp_path.iterdir()) == [image]
