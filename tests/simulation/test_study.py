"""End to end: a 3-hospital, 2-round study on real Ray actors, read back through MLflow's own client."""

from __future__ import annotations

import json
import math
import time

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data, load_config, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.messages import Metric
from fedray.organs import ORGANS
from fedray.simulation.launch import run_study
from fedray.tracking.callbacks import Callback
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray

ROUND_METRICS = [m.value for m in Metric] + [f"dice/{o}" for o in ORGANS]


def test_study_runs_on_ray_and_is_tracked_in_mlflow(tmp_path, ray_local):
    study = tiny_study(tmp_path)
    study["federation"]["local_validation"] = 1  # each hospital's last case is held out and scored
    config = with_absolute_paths(config_from_data(study))
    hospitals, test_dir = prepare_hospitals(config)
    seen = []
    summary = run_study(config, hospitals, test_dir, on_progress=seen.append, poll_s=0.1)

    # progress was reported (the last report, taken once the run has ended, always holds the round and
    # client count; an exact phase in between can fall between two polls of a tiny study)
    assert any(p.round >= 1 and p.clients == 3 for p in seen)

    # MLflow: one run named after the study, with params, tags and one value per round per metric
    mlflow.set_tracking_uri(config.tracking.uri)
    client = MlflowClient(tracking_uri=config.tracking.uri)
    experiment = client.get_experiment_by_name("fedray")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.tags["method"] == "fedavg" and run.data.tags["n_clients"] == "3"
    assert run.data.params["train.local_steps"] == "2"
    from fedray.config import config_digest

    assert run.data.tags["config_digest"] == config_digest(run.data.params)  # report can rebuild it from params
    for name in ROUND_METRICS:  # one value per round (all 7 organs are in the test set: none is NaN)
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    table = mlflow.search_runs(experiment_names=["fedray"], output_format="pandas")  # the users' way in
    assert len(table) == 1 and {f"metrics.{m}" for m in ROUND_METRICS} <= set(table.columns)

    # run folder
    run_dir = config.run_dir
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert list(rounds["round"]) == [1, 2]
    assert set(ROUND_METRICS) <= set(rounds.columns)
    assert {f"hd95/{o}" for o in ORGANS} <= set(rounds.columns) and rounds[Metric.COMPUTE_MAX_S.value].gt(0).all()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert {"params_total", "wall_s", "dice/mean", "comm/bytes_total"} <= set(saved)
    # the plateau rule: 2 rounds are too few for its 30-round window
    assert saved["rounds_to_plateau"] is None and saved["plateaued"] is False
    assert saved["dice/mean_final"] == saved["dice/mean"] and "dice/mean_best" in saved
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged["plateaued"] == 0.0 and "rounds_to_plateau" not in logged
    assert logged["dice/mean_final"] == pytest.approx(saved["dice/mean"])
    assert logged["wall_s"] == pytest.approx(saved["wall_s"])  # the report's study times, from MLflow too
    assert load_config(run_dir / "config.resolved.yaml") == config

    # communication: every hospital downloads and uploads exactly one model per round
    model_bytes = summary["bytes_per_model"]
    assert (rounds[Metric.BYTES_DOWN.value] == 3 * model_bytes).all()
    assert (rounds[Metric.BYTES_UP.value] == 3 * model_bytes).all()
    assert summary[Metric.BYTES_TOTAL.value] == 2 * 2 * 3 * model_bytes
    assert rounds[Metric.BYTES_TOTAL.value].tolist() == [6 * model_bytes, 12 * model_bytes]
    assert 0.0 <= summary["dice/mean"] <= 1.0 and not math.isnan(summary["dice/mean"])

    # per hospital: who trained each round, its loss, time and bytes (hospitals.csv, also in MLflow)
    per_hospital = pd.read_csv(run_dir / "hospitals.csv")
    assert sorted(zip(per_hospital["round"], per_hospital["hospital"])) == [(r, h) for r in (1, 2) for h in "abc"]
    assert (per_hospital["status"] == "accepted").all() and (per_hospital["steps"] == 2).all()
    assert (per_hospital["bytes_down"] == model_bytes).all() and (per_hospital["bytes_up"] == model_bytes).all()
    assert per_hospital["loss"].notna().all() and (per_hospital["retries"] == 0).all()
    assert "hospitals.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}

    # per test volume and organ, at each evaluation (cases.csv): Dice, HD95, NSD; pooled counts add up
    cases = pd.read_csv(run_dir / "cases.csv")
    assert set(cases["round"]) == {1, 2} and set(cases["organ"]) == set(ORGANS)
    final = cases[cases["round"] == 2]
    pooled = final.groupby("organ")[["tp", "fp", "fn"]].sum()
    dice = 2 * pooled["tp"] / (2 * pooled["tp"] + pooled["fp"] + pooled["fn"])
    assert dice.to_dict() == pytest.approx({o: summary[f"dice/{o}"] for o in ORGANS}, nan_ok=True)
    assert final["nsd"].between(0, 1).all() and "cases.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}

    # the hospital actors' evaluation equals the serial one in this process, volume by volume
    from fedray.data.datasets import load_folder
    from fedray.inference.predict import load_trained
    from fedray.training.evaluate import evaluate

    trained = load_trained(run_dir)
    serial = evaluate(trained.model, load_folder(test_dir, ORGANS, config.data.hu_window,
                                                 preprocess=config.data.preprocess), config.model.output, config.eval, len(ORGANS))
    expected = pd.DataFrame(serial.cases).assign(organ=lambda t: [ORGANS[k - 1] for k in t["organ"]])
    columns = ["case", "organ", "dice", "hd95_mm", "hd95_missed", "nsd", "tp", "fp", "fn"]
    pd.testing.assert_frame_equal(final[columns].reset_index(drop=True), expected[columns], check_dtype=False)
    per_volume = final.groupby("organ")["dice"].mean()
    assert summary[Metric.DICE_PER_VOLUME_MEAN.value] == pytest.approx(per_volume.mean())
    assert {o: summary[f"dice_per_volume/{o}"] for o in ORGANS} == pytest.approx(per_volume.to_dict())
    assert summary[Metric.HD95_MISSED_TOTAL.value] == final["hd95_missed"].sum()

    # local validation: each hospital's held-out case, recorded, scored on its home actor on its own organs
    from fedray.data.datasets import load_cases
    from fedray.metrics.rows import local_validation_fields
    from fedray.training.evaluate import score_cases

    manifest = json.loads((run_dir / "data_manifest.json").read_text())
    assert manifest["local_validation"] == {h.hospital_id: [h.validation[0].case_id] for h in hospitals}
    assert all(h.num_cases == n - 1 for h, n in zip(hospitals, (2, 3, 2)))
    local = {h.hospital_id: score_cases(trained.model, load_cases(h.validation, ORGANS, config.data.hu_window,
                                                                  config.data.preprocess),
                                        config.model.output, config.eval, len(ORGANS)) for h in hospitals}
    expected_local = local_validation_fields(ORGANS, hospitals, local)
    assert set(expected_local) == {"local_val/dice/a", "local_val/dice/b", "local_val/dice/c", "local_val/pooled_dice"}
    assert {k: summary[k] for k in expected_local} == pytest.approx(expected_local, nan_ok=True)
    assert {k: rounds[k].iloc[-1] for k in expected_local} == pytest.approx(expected_local, nan_ok=True)
    assert client.get_metric_history(run.info.run_id, "local_val/dice/b")[-1].step == 2


@pytest.mark.slow
def test_a_watched_study_shows_the_local_steps_of_the_hospitals_still_training(tmp_path, ray_local):
    study = tiny_study(tmp_path, rounds=1, train={"local_steps": 60, "batch_size": 1})  # seconds per hospital
    config = with_absolute_paths(config_from_data(study))
    hospitals, test_dir = prepare_hospitals(config)
    seen = []
    run_study(config, hospitals, test_dir, on_progress=seen.append, poll_s=0.1)
    running = [r for p in seen for r in p.running]
    assert running and all(h in "abc" and 0 < done < steps == 60 for h, done, steps in running)


def test_a_study_with_stop_at_plateau_ends_at_the_plateau_round(tmp_path, ray_local):
    # window 1 and a tolerance of 1 (100 Dice points): no round can beat the one before by that much, so
    # the rule is met at its first allowed round, 3 of 4 (plateau_min_rounds; without it, 2); the study
    # must end there, finished, with its last round checkpointed
    study = tiny_study(tmp_path, rounds=4)
    study["train"]["local_steps"] = 1
    study["eval"].update(stop_at_plateau=True, plateau_window=1, plateau_tolerance=1.0, plateau_min_rounds=3)
    config = with_absolute_paths(config_from_data(study))
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir)

    assert summary["rounds"] == 4 and summary["rounds_trained"] == 3
    assert summary["rounds_to_plateau"] == 3 and summary["plateaued"]
    assert summary["plateau_rule"].endswith(", from round 3")
    assert list(pd.read_csv(config.run_dir / "rounds.csv")["round"]) == [1, 2, 3]
    from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint

    assert load_checkpoint(checkpoint_path(config.run_dir)).round == 3
    client = MlflowClient(tracking_uri=config.tracking.uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["rounds_to_plateau"] == 3


SLOW_RECORDING_S = 1.5


def slow_recording() -> Callback:
    """A callback that records each round slowly, as a slow MLflow store or a user's callback would.

    Made in a function, so Ray ships the class by value (the driver actor cannot import a test module)."""

    seconds = SLOW_RECORDING_S  # a closure cell travels with the class; a test module's global would not

    class SlowRecording(Callback):
        def on_round_end(self, run, row) -> None:
            time.sleep(seconds)

    return SlowRecording()


def test_the_next_round_trains_while_a_round_is_recorded_unless_that_round_is_evaluated(tmp_path, ray_local):
    # rounds 1 and 3 are not evaluated, so rounds 2 and 4 start before their recording ends and their
    # training time holds its 1.5 s; round 2 is evaluated (the evaluation needs the actors, and may meet
    # the plateau rule), so round 3 starts only after it is recorded, and a tiny round takes well under 1.5 s
    study = tiny_study(tmp_path, rounds=4, eval={"every": 2, "roi_size": [16, 16, 16], "sw_batch_size": 2})
    config = with_absolute_paths(config_from_data(study))
    hospitals, test_dir = prepare_hospitals(config)
    run_study(config, hospitals, test_dir, callbacks=(slow_recording(),))
    train_s = pd.read_csv(config.run_dir / "rounds.csv").set_index("round")[Metric.TRAIN_S.value]
    assert train_s[1] < SLOW_RECORDING_S and train_s[3] < SLOW_RECORDING_S
    assert train_s[2] >= SLOW_RECORDING_S and train_s[4] >= SLOW_RECORDING_S
