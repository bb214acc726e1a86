"""The comparison sweeps' time on an idle machine, estimated from what was measured: each finished cell's
recorded rounds (results/comparison/*/*/summary.json: a rerun trains the same rounds, the results being
deterministic) times its variant's per-round cost measured on the idle machine (costs.jsonl, cell_cost.py),
evaluations every eval.every rounds, teachers' pre-training at the measured seconds per step, and the
cell's start and end; against each cell's recorded wall time (the sweeps ran on a shared machine).

    python results/sweep_cost_session17/estimate.py   # writes results/sweep_cost_session17/estimate.json
"""

from __future__ import annotations

import glob
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EVAL_EVERY = 5  # both sweeps evaluate every 5 rounds
TEACHER_STEPS, SITES = 1500, 7  # fedkd and fedkd_teacher_only pre-train one teacher per site
# The cells the issue (#17, step 4) asks for; the rest (ablations at more seeds, the rule's sensitivity cells) were added.
REQUIRED = {
    "mots7_phantom": {"fedavg_naive": [0, 1, 2], "fedavg": [0, 1, 2], "marginal": [0, 1, 2], "fedkd": [0, 1, 2],
                      "local": [0, 1, 2], "centralised": [0, 1, 2], "fedprox": [0], "condist": [0],
                      "fedkd_global_only": [0], "fedkd_teacher_only": [0]},
    "realistic_methods": {"fedavg_naive": [0, 1, 2], "fedavg": [0, 1, 2], "marginal": [0, 1, 2], "fedkd": [0, 1, 2]},
}
MEASURED = {  # variant -> costs.jsonl label, per cohort ("condist_plain" timed as condist: the same passes)
    "mots7_phantom": {"fedavg_naive": "ph_naive", "fedavg": "ph_fedavg", "fedavg_to_cap": "ph_fedavg",
                      "marginal": "ph_marginal", "marginal_to_cap": "ph_marginal", "fedkd": "ph_fedkd",
                      "local": "ph_local", "centralised": "ph_central", "fedprox": "ph_fedprox", "condist": "ph_condist",
                      "condist_plain": "ph_condist", "fedkd_global_only": "ph_global_only",
                      "fedkd_teacher_only": "ph_teacher_only"},
    "realistic_methods": {"fedavg_naive": "re_naive", "fedavg": "re_fedavg", "marginal": "re_marginal",
                          "fedkd": "re_fedkd", "fedkd_global_only": "ph_global_only"},
}


def main() -> None:
    costs = {}
    for line in (HERE / "costs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if not row["label"].startswith("sm_"):  # the smaller phantom's (cell_cost.py) is another sweep
            costs[row["label"]] = row  # the last measurement of a label counts
    # A cell's time outside its rounds: wall - rounds - its evaluations, for the cells without teachers;
    # the teacher cells' extra over that median, per step of their shortened (100-step) teachers.
    def outside(row):
        return row["wall_s"] - row["rounds_wall_s"] - row["evals"] * (row["eval_s_median"] or 0)
    plain = statistics.median(outside(r) for k, r in costs.items() if "fedkd" not in k and "teacher" not in k)
    per_step = statistics.median((outside(costs[k]) - plain) / (100 * SITES) for k in ("ph_fedkd", "ph_teacher_only", "re_fedkd"))
    startup = statistics.median(r["command_s"] - r["wall_s"] for r in costs.values())  # the command's start and end
    cells = []
    for path in sorted(glob.glob(str(ROOT / "results/comparison/*/*/summary.json"))):
        folder = Path(path).parent
        _, variant, seed = folder.name.split("__")
        cohort = folder.parent.name  # the superseded 300-round marginal cells sit in a folder of their own
        label = MEASURED.get(cohort, {}).get(variant)
        if label is None or cohort not in REQUIRED:
            continue
        summary = json.loads(Path(path).read_text())
        cost = costs[label]
        rounds = summary["rounds_trained"]
        teachers = TEACHER_STEPS * SITES * per_step if variant in ("fedkd", "fedkd_teacher_only") else 0.0
        estimate = (rounds * cost["train_s_median"] + (rounds // EVAL_EVERY + 1) * cost["eval_s_median"]
                    + teachers + plain + startup)
        cells.append({"cell": folder.name, "required": int(seed[1:]) in REQUIRED[cohort].get(variant, []),
                      "rounds": rounds, "recorded_min": summary["wall_s"] / 60, "estimate_idle_min": estimate / 60})

    def total(rows, key):
        return sum(r[key] for r in rows) / 60

    required = [c for c in cells if c["required"]]
    record = {
        "doc": __doc__.splitlines()[0], "command": "python results/sweep_cost_session17/estimate.py",
        "seconds_outside_rounds": plain, "teacher_s_per_step": per_step, "command_start_end_s": startup,
        "required_cells": len(required), "required_recorded_h": total(required, "recorded_min"),
        "required_estimate_idle_h": total(required, "estimate_idle_min"),
        "all_cells": len(cells), "all_recorded_h": total(cells, "recorded_min"),
        "all_estimate_idle_h": total(cells, "estimate_idle_min"),
        "cells": cells,
    }
    (HERE / "estimate.json").write_text(json.dumps(record, indent=2) + "\n")
    print({k: v for k, v in record.items() if k != "cells"})


if __name__ == "__main__":
    main()
