"""Report inputs from study folders: rounds that measured nothing leave no points in the history."""

from __future__ import annotations

import json
import math

import pandas as pd
import yaml

from fedray.reporting.run_folders import folder_runs


def test_rounds_without_an_evaluation_leave_no_point_in_the_dice_history(tmp_path):
    folder = tmp_path / "s__a__s0"
    folder.mkdir()
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump({"name": "s", "seed": 0, "tracking": {"run_name": folder.name}}))
    (folder / "summary.json").write_text(json.dumps({"dice/mean_untrained": 0.0, "params_total": 1, "comm/bytes_preparation": 0}))
    # evaluated every 2 rounds (eval.every: 2): rounds 1 and 3 have blank Dice cells
    pd.DataFrame({"round": [1, 2, 3, 4], "dice/mean": [math.nan, 0.2, math.nan, 0.4],
                  "comm/bytes_down": [1.0, 2.0, 3.0, 4.0]}).to_csv(folder / "rounds.csv", index=False)
    runs, histories = folder_runs([folder], ["dice/mean", "comm/bytes_down"])
    dice = histories[histories["metric"] == "dice/mean"]
    assert dice["step"].tolist() == [2, 4] and dice["value"].tolist() == [0.2, 0.4]  # drawable as one line
    assert histories[histories["metric"] == "comm/bytes_down"]["step"].tolist() == [1, 2, 3, 4]
    assert runs.loc[0, "metrics.dice/mean"] == 0.4
