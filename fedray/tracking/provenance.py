"""The reproducibility record: which code (git commit) and which data (checksums) a run used."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from fedray.data.msd import manifest_sha256
from fedray.tracking.checksums import ChecksumCache, file_digest


def data_manifest(
    hospital_files: dict[str, Sequence[Path]], test_dir: Path, checksums: ChecksumCache | None = None
) -> dict:
    """Checksums of each hospital's files (`Hospital.files`) and of the test set, and one for the whole study.

    `checksums` remembers file digests between launches (by path, size and modification time); by
    default every file is read.
    """
    checksums = checksums or ChecksumCache(None)
    hospitals = {hid: files_sha256(files, checksums.digest) for hid, files in hospital_files.items()}
    test = manifest_sha256(test_dir, checksums.digest)
    checksums.save()
    study = hashlib.sha256(json.dumps({"hospitals": hospitals, "test": test}, sort_keys=True).encode()).hexdigest()
    return {"study": study, "hospitals": hospitals, "test": test}


def files_sha256(paths: Sequence[Path], digest: Callable[[Path], bytes] = file_digest) -> str:
    """SHA-256 over the contents of `paths` in order (so a changed voxel or label map changes it)."""
    combined = hashlib.sha256()
    for path in paths:
        combined.update(digest(Path(path)))
    return combined.hexdigest()


def git_commit() -> str:
    """The commit of the fedray checkout in use (with '+dirty' for local changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
