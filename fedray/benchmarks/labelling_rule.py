"""How much the labelling rule moves a softmax study's Dice: its final model, study rule against arg-max.

    python -m fedray.benchmarks.labelling_rule RUN_DIR [RUN_DIR ...]   -> results/comparison_rule_check.json

Pooled Dice on the test set in the preprocessed grid (the study scores in the original grid; on the
phantom the two grids are one), under fedray's rule (an organ where its probability > 0.5 and is the
highest) and under plain arg-max over background + organs (the old softmax rule). Sigmoid runs are
scored once (their two rows are equal)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from fedray.config import SiteConfig
from fedray.data.datasets import load_cases
from fedray.data.federation import held_out_folder
from fedray.data.sites import read_site_cases
from fedray.inference.predict import load_trained
from fedray.metrics.segmentation import confusion_counts, dice_from_counts, mean_dice
from fedray.training.evaluate import logits_to_labels

STUDY_RULE, ARG_MAX = "study rule (p>0.5 and max)", "arg-max"


def rule_dice(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """Rule -> {"mean", organ...} pooled Dice of the run's final model on its test set."""
    trained = load_trained(run_dir)
    cfg = trained.config
    organs = list(cfg.data.organs)
    listed = read_site_cases(SiteConfig(path=str(held_out_folder(cfg))), require_files=True).cases
    counts = {rule: np.zeros((len(organs), 3), np.int64) for rule in (STUDY_RULE, ARG_MAX)}
    ev = cfg.eval
    with torch.no_grad():
        for case in load_cases(listed, organs, cfg.data.hu_window, cfg.data.preprocess):
            logits = sliding_window_inference(case["image"][None], ev.roi_size, ev.sw_batch_size, trained.model,
                                              overlap=ev.overlap, mode=ev.mode)
            truth = case["label"][0].long()
            study = logits_to_labels(logits, cfg.model.output)[0]
            counts[STUDY_RULE] += confusion_counts(study, truth, len(organs))
            plain = logits.argmax(1)[0] if cfg.model.output == "softmax" else study
            counts[ARG_MAX] += confusion_counts(plain, truth, len(organs))
    return {rule: {"mean": mean_dice(dice_from_counts(c)), **dict(zip(organs, map(float, dice_from_counts(c))))}
            for rule, c in counts.items()}


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(2)
    out = {}
    for run_dir in run_dirs:
        out[Path(run_dir).name] = rule_dice(run_dir)
        print(Path(run_dir).name, {k: round(v["mean"], 3) for k, v in out[Path(run_dir).name].items()}, flush=True)
    Path("results/comparison_rule_check.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
