"""One process at a time in a study folder: an advisory lock that the OS drops when its process ends."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedray.errors import FedrayError

try:
    import fcntl
except ImportError:  # not on Windows, where Ray's simulation is not supported either: no lock
    fcntl = None

LOCK_NAME = ".fedray.lock"  # in the study folder; it holds who holds the lock (not in git, not logged)
ACQUIRE_TRIES, ACQUIRE_WAIT_S = 10, 0.05  # a held lock is refused after half a second


class StudyFolderInUse(FedrayError):
    """Another live process trains, resumes or evaluates in this study folder."""


@contextmanager
def study_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold the study folder for this process while the study runs; raise StudyFolderInUse, naming
    the holder, if another process holds it. Two processes training one study would append each
    round to its tables twice and roll back each other's hospital states. flock: released when the
    process ends, however it ends (no stale lock after kill -9); it holds on a local file system
    (not reliably on NFS, where a cluster's head node should keep its results)."""
    if fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as handle:
        for attempt in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < ACQUIRE_TRIES:  # `folder_holder` may be looking (a shared lock for an instant)
                    time.sleep(ACQUIRE_WAIT_S)
                    continue
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not said which"
                raise StudyFolderInUse(_in_use(run_dir, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # an unheld lock file says nobody holds it
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_a_held_folder(run_dir: Path) -> None:
    """Raise StudyFolderInUse now if another process holds the folder (a check before slow work;
    `study_folder_lock` is what keeps a second process out)."""
    holder = folder_holder(run_dir)
    if holder is not None:
        raise StudyFolderInUse(_in_use(run_dir, holder))


def _in_use(run_dir: Path, holder: str) -> str:
    if holder.startswith(f"pid {os.getpid()} "):  # flock is per open file: this process holds it already
        return f"The study folder {run_dir} is already in use by this process ({holder}): one study at a time."
    return (f"The study folder {run_dir} is in use by another fedray process ({holder}). Wait for it "
            f"to finish or stop it (Ctrl-C, or kill -TERM its pid: it stops after a checkpoint); one "
            f"folder trained by two processes at once would have each round written twice.")


def folder_holder(run_dir: Path) -> str | None:
    """Who holds the study folder's lock now ("pid N on HOST since T"), or None if nobody does."""
    if fcntl is None:
        return None
    try:
        handle = open(run_dir / LOCK_NAME)  # read-only: a folder one may not write is still looked at
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
