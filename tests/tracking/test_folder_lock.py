"""One process at a time in a study folder; the lock goes with its process, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fedray.tracking.folder_lock import StudyFolderInUse, folder_holder, study_folder_lock

HOLD = """
import sys, time
from pathlib import Path
from fedray.tracking.folder_lock import study_folder_lock
with study_folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_another_process(run_dir):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_is_refused_with_the_holder_named_and_the_lock_goes_with_a_killed_holder(tmp_path):
    run_dir = tmp_path / "study"
    holder = hold_in_another_process(run_dir)
    try:
        assert folder_holder(run_dir).startswith(f"pid {holder.pid} on ")
        with pytest.raises(StudyFolderInUse, match=f"in use by another fedray process \\(pid {holder.pid} on "):
            with study_folder_lock(run_dir):
                pytest.fail("entered a folder another process holds")
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean exit: the OS drops the lock
        holder.wait()
    assert folder_holder(run_dir) is None
    with study_folder_lock(run_dir):
        assert folder_holder(run_dir).startswith(f"pid {os.getpid()} on ")  # held, by this process now
    assert (run_dir / ".fedray.lock").read_text() == ""  # released: says nobody holds it


def test_the_lock_is_free_again_after_the_study_ends_and_a_missing_folder_is_made(tmp_path):
    run_dir = tmp_path / "new" / "study"
    with study_folder_lock(run_dir):
        pass
    with study_folder_lock(run_dir):  # the same process, again: free
        time.sleep(0)
    assert folder_holder(run_dir) is None and folder_holder(tmp_path / "never") is None


def test_a_nested_lock_in_one_process_says_it_is_this_process(tmp_path):
    run_dir = tmp_path / "study"
    with study_folder_lock(run_dir):
        with pytest.raises(StudyFolderInUse, match="already in use by this process"):
            with study_folder_lock(run_dir):
                pass
    with study_folder_lock(run_dir):  # the nested attempt did not release the outer lock's file
        pass
