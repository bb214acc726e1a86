"""The reproducibility record: which code (git commit), which data (checksums) and which compute platform a run used."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedray.data.msd import manifest_sha256
from fedray.tracking.checksums import ChecksumCache, file_digest

if TYPE_CHECKING:
    import torch


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


def compute_platform(device: torch.device) -> dict[str, str]:
    """The main things a run's floating-point results depend on besides its seed and code: the
    processor, the CPU kernels torch dispatches to on it (AVX2, AVX512, ...), torch's version and the
    GPU (not here: torch's thread count, which the config sets, and the library versions in the
    run's tags). The same seed on
    another platform gives other round-off, and a long study's curve drifts apart from it."""
    import torch  # here, not at the top: the launcher reads provenance without torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:  # Linux: the processor's name, which platform.processor() lacks
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
    }


def platforms_label(sessions: list[dict] | None) -> str:
    """One line for a run's compute platforms (summary.json `platforms`), each from the round it began at;
    "" where none were recorded at all (a run from before they were)."""
    parts = []
    for session in sessions or []:
        platforms = session["platforms"]
        named = "not recorded" if platforms is None else " + ".join(
            f"{p['cpu']} ({', '.join(x for x in (p['cpu_kernels'], 'torch ' + p['torch'], p['gpu']) if x)})"
            for p in platforms)
        parts.append(f"from round {session['from_round']}: {named}")
    return "; ".join(parts)
