"""The driver: the only round loop. Samples hospitals, broadcasts weights, folds updates, evaluates, logs."""

from __future__ import annotations

import math
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

import fedray
from fedray.config import StudyConfig, flatten
from fedray.configtypes import to_data
from fedray.data.datasets import load_folder
from fedray.data.federation import Hospital
from fedray.messages import Metric, State, dice_metric, encode_state
from fedray.metrics.segmentation import dice_from_counts, mean_dice
from fedray.models.factory import build_model, count_parameters
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.placement import assign_hospitals, create_hospital_actors
from fedray.strategies import build_strategy
from fedray.tracking.mlflow import MlflowTracker, default_tracking_uri
from fedray.tracking.run_files import RunFiles
from fedray.training.evaluate import evaluate


class StudyStopped(Exception):
    """The user asked the study to stop (Ctrl-C)."""


@dataclass
class Progress:
    """What the CLI shows while a study runs."""

    phase: str = "starting"
    round: int = 0
    rounds: int = 0
    clients_done: int = 0
    clients: int = 0
    train_loss: float = math.nan
    dice_mean: float = math.nan
    elapsed_s: float = 0.0
    eta_s: float = math.nan
    run_id: str | None = None
    extra: dict = field(default_factory=dict)


class Driver:
    """Runs one study. Created as a Ray actor by `launch.run_study`, or in-process by tests."""

    def __init__(self, config: StudyConfig, hospitals: list[Hospital], test_dir: Path) -> None:
        self.config = config
        self.hospitals = hospitals
        self.test_dir = test_dir
        self.organs = list(config.data.organs)
        self.strategy = build_strategy(config.method)
        self._progress = Progress(rounds=config.rounds)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- called concurrently by the CLI (threaded actor) ------------------------------------------
    def progress(self) -> Progress:
        """A snapshot of the study's progress."""
        with self._lock:
            return Progress(**vars(self._progress))

    def stop(self) -> None:
        """Ask the study to stop at the next client result or round boundary."""
        self._stop.set()

    # -- the round loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        """Run every round and return the summary (also written to summary.json)."""
        cfg = self.config
        start = time.perf_counter()
        files = RunFiles(cfg.run_dir)
        files.write_config(cfg)
        tracker = MlflowTracker(
            cfg.tracking.uri or default_tracking_uri(cfg.tracking.results_dir),
            cfg.tracking.experiment,
            Path(cfg.tracking.results_dir) / "mlartifacts",
        )
        run_id = tracker.start(cfg.run_name, flatten(to_data(cfg)), self._tags())
        self._update(run_id=run_id, phase="loading data")
        try:
            summary = self._rounds(tracker, files, start)
        except StudyStopped:
            tracker.end("KILLED")
            raise
        except BaseException:
            tracker.end("FAILED")
            raise
        tracker.log_artifact(files.config_path)
        tracker.log_artifact(files.rounds_path)
        tracker.log_artifact(files.summary_path)
        tracker.end("FINISHED")
        return summary

    def _rounds(self, tracker: MlflowTracker, files: RunFiles, start: float) -> dict:
        cfg = self.config
        torch.manual_seed(cfg.seed)  # same initial weights for every method run with this seed
        model = build_model(cfg.model, len(self.organs))
        global_state: State = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        test_cases = load_folder(self.test_dir, self.organs, cfg.data.hu_window)
        actors = create_hospital_actors(cfg, assign_hospitals(cfg, self.hospitals))
        ray.get([actor.hosted.remote() for actor, _ in actors])  # data loaded before round 1
        actor_of = {h.hospital_id: actor for actor, hosted in actors for h in hosted}

        untrained = evaluate(model, test_cases, cfg.model.output, cfg.eval, len(self.organs))
        untrained_dice = mean_dice(dice_from_counts(untrained.counts))
        teachers_ref, bytes_teachers = None, 0
        if self.strategy.teacher_steps() > 0:
            self._update(phase="pre-training teachers")
            teachers_ref, bytes_teachers = self._pretrain_teachers(actor_of, self.strategy.teacher_steps())
        bytes_total = bytes_teachers
        last_dice = np.full(len(self.organs), np.nan)
        last_eval = untrained
        round_times: list[float] = []
        for round_index in range(1, cfg.rounds + 1):
            round_start = time.perf_counter()
            chosen = self._sample(round_index)
            self._update(phase="training", round=round_index, clients_done=0, clients=len(chosen))
            payload = encode_state(global_state)
            payload_ref = ray.put(payload)  # one broadcast per round through the object store
            pending = {
                actor_of[h.hospital_id].train.remote(h.hospital_id, round_index, payload_ref, teachers_ref): h
                for h in chosen
            }
            ledger = RoundLedger(self.strategy, global_state)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                pending.pop(done[0])
                ledger.add(ray.get(done[0]))  # fold in, then drop the update
                self._update(clients_done=len(chosen) - len(pending), train_loss=ledger.train_loss)
                if self._stop.is_set():
                    raise StudyStopped()
            global_state = ledger.new_global_state()
            bytes_total += ledger.bytes_down + ledger.bytes_up

            evaluated = round_index % cfg.eval.every == 0 or round_index == cfg.rounds
            if evaluated:
                self._update(phase="evaluating")
                model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in global_state.items()})
                last_eval = evaluate(model, test_cases, cfg.model.output, cfg.eval, len(self.organs))
                last_dice = dice_from_counts(last_eval.counts)
            round_s = time.perf_counter() - round_start
            round_times.append(round_s)
            dice = last_dice if evaluated else np.full(len(self.organs), np.nan)
            row = {
                "round": round_index,
                Metric.DICE_MEAN.value: mean_dice(dice) if evaluated else math.nan,
                **{dice_metric(o): float(d) for o, d in zip(self.organs, dice)},
                Metric.INFER_S_PER_VOLUME.value: last_eval.seconds_per_volume if evaluated else math.nan,
                Metric.BYTES_DOWN.value: ledger.bytes_down,
                Metric.BYTES_UP.value: ledger.bytes_up,
                Metric.BYTES_TOTAL.value: bytes_total,
                Metric.ROUND_S.value: round_s,
                Metric.TRAIN_LOSS.value: ledger.train_loss,
                Metric.REJECTED.value: len(ledger.rejected),
                "clients": len(chosen),
            }
            files.add_round(row)
            tracker.log_metrics({k: v for k, v in row.items() if k not in ("round", "clients")}, step=round_index)
            elapsed = time.perf_counter() - start
            self._update(
                phase="training",
                dice_mean=float(mean_dice(last_dice)),
                elapsed_s=elapsed,
                eta_s=float(np.mean(round_times)) * (cfg.rounds - round_index),
            )
            if self._stop.is_set():
                raise StudyStopped()

        final_dice = dice_from_counts(last_eval.counts)
        summary = {
            Metric.DICE_MEAN.value: mean_dice(final_dice),
            **{dice_metric(o): float(d) for o, d in zip(self.organs, final_dice)},
            Metric.INFER_S_PER_VOLUME.value: last_eval.seconds_per_volume,
            Metric.BYTES_TOTAL.value: bytes_total,
            Metric.TRAIN_LOSS.value: row[Metric.TRAIN_LOSS.value],
            "dice/mean_untrained": untrained_dice,
            "comm/bytes_teachers": bytes_teachers,
            "params_total": count_parameters(model),
            "bytes_per_model": len(encode_state(global_state)),
            "rounds": cfg.rounds,
            "wall_s": time.perf_counter() - start,
            "run_id": tracker.run_id,
            "run_dir": str(files.run_dir),
            "tracking_uri": tracker.uri,
        }
        files.write_summary(summary)
        tracker.log_metrics(
            {
                "dice/mean_untrained": untrained_dice,
                "params_total": summary["params_total"],
                "comm/bytes_teachers": bytes_teachers,
            },
            step=0,
        )
        self._update(phase="done", elapsed_s=summary["wall_s"], eta_s=0.0)
        return summary

    def _pretrain_teachers(self, actor_of: dict, steps: int) -> tuple[object, int]:
        """Pre-train one organ-specific teacher per organ and share it once with the other hospitals.

        Organ k's teacher is trained by the hospital with the most cases among those labelling k
        (lowest index on ties), so a study with hundreds of hospitals pre-trains at most one model
        per organ. Returns the object-store reference of {organ: (teacher id, head, payload)} and
        the bytes this costs: each teacher uploaded once, and downloaded by every hospital that
        lacks one of its organs.
        """
        teacher_of = {}
        for k, organ in enumerate(self.organs):
            labelling = [h for h in self.hospitals if organ in h.organs]
            teacher_of[k] = min(labelling, key=lambda h: (-h.num_cases, h.index))
        teacher_hospitals = {h.hospital_id: h for h in teacher_of.values()}
        refs = {hid: actor_of[hid].pretrain_teacher.remote(hid, steps) for hid in teacher_hospitals}
        payloads = {hid: ray.get(ref) for hid, ref in refs.items()}
        teachers = {}
        for k, hospital in teacher_of.items():
            own = [o for o in self.organs if o in hospital.organs]
            teachers[k] = (hospital.hospital_id, own.index(self.organs[k]), payloads[hospital.hospital_id])
        uploaded = sum(len(p) for p in payloads.values())
        downloaded = 0
        for hospital in self.hospitals:
            needed = {teacher_of[k].hospital_id for k, o in enumerate(self.organs) if o not in hospital.organs}
            downloaded += sum(len(payloads[t]) for t in needed - {hospital.hospital_id})
        return ray.put(teachers), uploaded + downloaded

    def _sample(self, round_index: int) -> list[Hospital]:
        """This round's hospitals: all, or `clients_per_round` drawn with a (seed, round) RNG."""
        k = self.config.federation.clients_per_round
        if k is None or k >= len(self.hospitals):
            return list(self.hospitals)
        rng = np.random.default_rng([self.config.seed, round_index])
        picks = sorted(rng.choice(len(self.hospitals), size=k, replace=False))
        return [self.hospitals[i] for i in picks]

    def _tags(self) -> dict[str, str]:
        cfg = self.config
        return {
            "method": cfg.method.name,
            "seed": str(cfg.seed),
            "data": cfg.data.source,
            "n_clients": str(len(self.hospitals)),
            "model": cfg.model.name,
            "study": cfg.name,
            "fedray_version": fedray.__version__,
            "torch_version": torch.__version__,
            "ray_version": ray.__version__,
            "python_version": platform.python_version(),
            "role": "study",
            **({"mlflow.parentRunId": cfg.tracking.parent_run_id} if cfg.tracking.parent_run_id else {}),
        }

    def _update(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._progress, key, value)
