"""The reproducibility record: which code (git commit) and which data (checksums) a run used."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from fedray.data.msd import manifest_sha256


def data_manifest(hospital_folders: dict[str, tuple[Path, ...]], test_dir: Path) -> dict:
    """Checksums of every hospital's and the test set's files, and one for the whole study."""
    folders = {hid: [manifest_sha256(f) for f in paths] for hid, paths in hospital_folders.items()}
    folders["test"] = [manifest_sha256(test_dir)]
    study = hashlib.sha256(json.dumps(folders, sort_keys=True).encode()).hexdigest()
    return {"study": study, "folders": folders}


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
