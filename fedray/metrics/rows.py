"""A round's metric row (rounds.csv, MLflow) and a study's summary: the one place their fields are named."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedray.messages import (
    Metric,
    RoundAccount,
    dice_metric,
    dice_per_volume_metric,
    hd95_metric,
    hd95_missed_metric,
)
from fedray.metrics.segmentation import dice_from_counts, mean_dice


def evaluation_fields(organs: Sequence[str], evaluation, evaluated: bool) -> dict[str, float]:
    """Mean and per-organ Dice, pooled over test volumes (`dice/*`) and per volume (`dice_per_volume/*`),
    per-organ HD95 and its misses, and inference time; NaN everywhere when the round was not evaluated."""
    n = len(organs)
    nan = np.full(n, np.nan)
    dice = dice_from_counts(evaluation.counts) if evaluated else nan
    per_volume = evaluation.dice_per_volume if evaluated else nan
    missed = evaluation.hd95_missed if evaluated else nan
    return {
        Metric.DICE_MEAN.value: mean_dice(dice) if evaluated else math.nan,
        **{dice_metric(o): float(d) for o, d in zip(organs, dice)},
        Metric.DICE_PER_VOLUME_MEAN.value: mean_dice(per_volume) if evaluated else math.nan,
        **{dice_per_volume_metric(o): float(d) for o, d in zip(organs, per_volume)},
        **{hd95_metric(o): float(h) if evaluated else math.nan for o, h in zip(organs, evaluation.hd95_mm)},
        **{hd95_missed_metric(o): float(m) for o, m in zip(organs, missed)},
        Metric.HD95_MISSED_TOTAL.value: float(np.sum(missed)) if evaluated else math.nan,
        Metric.INFER_S_PER_VOLUME.value: evaluation.seconds_per_volume if evaluated else math.nan,
    }


def local_validation_fields(organs: Sequence[str], hospitals: Sequence, scores: dict[str, Sequence] | None) -> dict:
    """Each hospital's Dice on its held-out cases (`local_val/dice/<hospital>`), pooled over those cases
    and averaged over the organs they label (the others are not scored), and the same pooled over every
    hospital's held-out cases (`local_val/pooled_dice`); NaN when the round was not evaluated.

    `scores`: hospital id -> one training.evaluate.CaseScore per case of its `validation`, in order.
    """
    held_out = [h for h in hospitals if h.validation]
    if not held_out:
        return {}
    if scores is None:
        return {**{f"local_val/dice/{h.hospital_id}": math.nan for h in held_out}, "local_val/pooled_dice": math.nan}
    fields, total = {}, np.zeros((len(organs), 3), dtype=np.int64)
    for hospital in held_out:
        counts = np.zeros((len(organs), 3), dtype=np.int64)
        for case, score in zip(hospital.validation, scores[hospital.hospital_id], strict=True):
            labelled = np.array([organ in case.label_map.organs for organ in organs])
            counts += score.counts * labelled[:, None]  # an organ the case does not label: no counts, NaN
        total += counts
        fields[f"local_val/dice/{hospital.hospital_id}"] = mean_dice(dice_from_counts(counts))
    fields["local_val/pooled_dice"] = mean_dice(dice_from_counts(total))
    return fields


def round_row(
    round_index: int,
    organs: Sequence[str],
    evaluation,
    evaluated: bool,
    account: RoundAccount,
    bytes_total: int,
    seconds: dict[str, float],
    train_loss: float,
    faults: dict[str, int],
    clients: int,
) -> dict[str, float]:
    """One round's row; `seconds` holds the round's, training's and evaluation's durations."""
    return {
        "round": round_index,
        **evaluation_fields(organs, evaluation, evaluated),
        Metric.BYTES_DOWN.value: account.bytes_down,
        Metric.BYTES_UP.value: account.bytes_up,
        Metric.BYTES_TOTAL.value: bytes_total,
        Metric.ROUND_S.value: seconds["round"],
        Metric.TRAIN_S.value: seconds["train"],
        Metric.EVAL_S.value: seconds["eval"],
        Metric.TRAIN_LOSS.value: train_loss,
        Metric.REJECTED.value: len(account.rejected),
        Metric.COMPUTE_MAX_S.value: max(account.compute_s.values(), default=0.0),
        Metric.COMPUTE_SUM_S.value: sum(account.compute_s.values()),
        **faults,
        "clients": clients,
    }


HOSPITAL_COLUMNS = ("round", "hospital", "status", "loss", "steps", "seconds", "bytes_down", "bytes_up", "retries")


def hospital_rows(
    round_index: int, chosen: Sequence[str], account: RoundAccount, outcomes: dict[str, tuple[str, int]], steps: int
) -> list[dict]:
    """One row per hospital sampled in the round (hospitals.csv): status is accepted, rejected (bad
    update), late (past the deadline), dropped (failed after its retries) or dropout (simulated)."""
    rows = []
    for hid in chosen:
        why, retries = outcomes.get(hid, ("", 0))
        if hid in account.accepted:
            status = "accepted"
        elif hid in account.late:
            status = "late"
        elif hid in account.rejected:
            status = "rejected"
        else:
            status = why or "dropped"
        down, up = account.traffic.get(hid, (0, 0))
        trained = hid in account.losses
        rows.append({
            "round": round_index, "hospital": hid, "status": status,
            "loss": account.losses.get(hid, math.nan), "steps": steps if trained else 0,
            "seconds": account.compute_s.get(hid, math.nan), "bytes_down": down, "bytes_up": up, "retries": retries,
        })
    return rows
