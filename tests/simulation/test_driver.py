"""The driver's progress board: hospitals done and the local steps of those still training."""

from __future__ import annotations

import numpy as np

from fedray.cli import _progress_text
from fedray.simulation.driver import ProgressBoard, StudyState
from fedray.training.evaluate import Evaluation


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


def _state(round_index: int = 0) -> StudyState:
    evaluation = Evaluation(np.zeros((2, 3), dtype=np.int64), 0.1, np.full(2, np.nan))
    return StudyState(round=round_index, global_state={"w": np.zeros(2, np.float32)}, untrained_dice=0.0,
                      last_eval=evaluation)


def test_each_session_records_its_actors_platforms_once_and_a_checkpoint_keeps_them():
    xeon = {"cpu": "Xeon", "cpu_kernels": "AVX512", "torch": "2.13.0+cpu", "gpu": ""}
    epyc = {**xeon, "cpu": "EPYC", "cpu_kernels": "AVX2"}
    state = _state()
    state.note_platforms([{"platform": xeon}, {"platform": xeon}])  # two actors on one platform: listed once
    assert state.platforms == [{"from_round": 1, "platforms": [xeon]}]
    state.round = 44
    restored, _ = StudyState.from_checkpoint(state.to_checkpoint("run", [], {}))
    restored.note_platforms([{"platform": xeon}])  # resumed on the same platform: nothing new
    assert restored.platforms == [{"from_round": 1, "platforms": [xeon]}]
    restored.note_platforms([{"platform": xeon}, {"platform": epyc}])  # a mixed cluster from round 45
    assert restored.platforms[1] == {"from_round": 45, "platforms": [epyc, xeon]}


def test_a_checkpoint_from_before_platforms_were_recorded_says_its_rounds_ran_on_an_unknown_one():
    checkpoint = _state(10).to_checkpoint("run", [], {})
    del checkpoint.meta["platforms"]
    restored, _ = StudyState.from_checkpoint(checkpoint)
    assert restored.platforms == [{"from_round": 1, "platforms": None}]
    restored.note_platforms([{"platform": {"cpu": "Xeon", "cpu_kernels": "AVX512", "torch": "2", "gpu": ""}}])
    assert [s["from_round"] for s in restored.platforms] == [1, 11]
