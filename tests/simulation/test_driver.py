"""The driver's progress board: hospitals done and the local steps of those still training."""

from __future__ import annotations

from fedray.cli import _progress_text
from fedray.simulation.driver import ProgressBoard


def test_the_board_shows_this_rounds_hospitals_still_training_and_forgets_finished_ones():
    board = ProgressBoard(rounds=3)
    board.update(phase="training", round=1, clients_done=0, clients=5)
    board.hospital_steps(1, "hospital_17", 12, 80)
    board.hospital_steps(1, "hospital_03", 70, 80)
    board.hospital_steps(1, "hospital_09", 5, 80)
    board.hospital_steps(0, "hospital_01", 1, 80)  # a late report from another round
    board.hospital_steps(1, "hospital_09", 80, 80)  # finished
    board.hospital_steps(1, "hospital_09", 60, 80)  # an earlier report that arrived late
    progress = board.snapshot()
    assert progress.running == (("hospital_03", 70, 80), ("hospital_17", 12, 80))
    assert _progress_text(progress).endswith("hospital_17 12/80 steps, hospital_03 70/80 steps")  # furthest behind first
    board.update(round=2, clients_done=0)
    assert board.snapshot().running == ()  # a new round starts with none reported
    for i in range(5):
        board.hospital_steps(2, f"h{i}", i + 1, 10)
    assert _progress_text(board.snapshot()).endswith("h0 1/10 steps, h1 2/10 steps, h2 3/10 steps (+2 more)")


def test_the_board_shows_preparation_jobs_done_and_the_steps_of_those_still_training():
    board = ProgressBoard(rounds=3)
    board.update(phase="preparing", clients_done=0, clients=7)
    board.hospital_steps(0, "teacher/site_2", 450, 1500)  # round 0: the method's preparation
    board.hospital_steps(0, "teacher/site_0", 1500, 1500)  # finished
    board.update(clients_done=1)
    assert _progress_text(board.snapshot()) == "preparing · jobs 1/7 · teacher/site_2 450/1500 steps"
    board.update(phase="training", round=1, clients_done=0, clients=7)
    assert board.snapshot().running == ()  # round 1 starts with none reported
