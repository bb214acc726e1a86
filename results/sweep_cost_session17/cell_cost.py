"""Per-round cost of each variant of the two comparison sweeps on this machine: 10 rounds of a cell's config
(the sweep's overrides, no plateau stop), teachers shortened to 100 steps, appended to costs.jsonl.

    python results/sweep_cost_session17/cell_cost.py ph_fedavg ph_fedkd ...   # from the checkout's root
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import yaml


def overrides(sweep, drop=("rounds=", "tracking.results_dir", "eval.stop_at_plateau", "eval.every")):
    d = yaml.safe_load(open(sweep))
    return d["study"], [x for x in d["overrides"] if not x.startswith(drop)]
def cell(label, sweep, extra):
    study, o = overrides(sweep)
    out = f"/tmp/cellcost/{label}"; shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "fedray.cli", "run", study, *extra[:1], *o, *extra[1:], f"tracking.results_dir={out}",
                        "tracking.checkpoint_every=0"], capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"})
    if r.returncode: print(label, "FAILED", r.stderr[-2000:]); return
    f = glob.glob(f"{out}/*/rounds.csv")[0]; d = pd.read_csv(f)
    s = json.load(open(glob.glob(f"{out}/*/summary.json")[0]))
    ev = d["time/eval_s"].dropna()
    rec = {"label": label, "rounds": len(d), "train_s_median": float(d["time/train_s"].median()),
           "eval_s_median": float(ev.median()) if len(ev) else None, "evals": len(ev), "wall_s": s["wall_s"],
           "rounds_wall_s": s.get("rounds_wall_s"), "command_s": time.time() - t}
    print(json.dumps(rec)); open("results/sweep_cost_session17/costs.jsonl", "a").write(json.dumps(rec) + "\n")
which = sys.argv[1:]
P, R = "configs/bench/mots7_phantom.yaml", "configs/bench/realistic.yaml"
SMALL = ["data.phantom.shape=[40,40,30]", "data.phantom.spacing=[9.6,8.0,8.0]", "data.patch_size=[16,16,16]",
         "eval.roi_size=[16,16,16]"]
cells = {
 "ph_fedavg": (P, ["configs/methods/fedavg.yaml", "rounds=10", "eval.every=5"]),
 "ph_fedkd": (P, ["configs/methods/fedkd.yaml", "rounds=10", "eval.every=100", "method.params.teacher_steps=100"]),
 "ph_central": (P, ["configs/methods/centralised.yaml", "rounds=10", "eval.every=100", "train.local_steps=70"]),
 "ph_marginal": (P, ["configs/methods/marginal.yaml", "rounds=10", "eval.every=100"]),
 "ph_naive": (P, ["configs/methods/fedavg_naive.yaml", "rounds=10", "eval.every=100"]),
 "ph_fedprox": (P, ["configs/methods/fedprox.yaml", "rounds=10", "eval.every=100"]),
 "ph_condist": (P, ["configs/methods/condist.yaml", "rounds=10", "eval.every=100", "method.params.ramp_rounds=40"]),
 "ph_global_only": (P, ["configs/methods/fedkd_global_only.yaml", "rounds=10", "eval.every=100"]),
 "ph_teacher_only": (P, ["configs/methods/fedkd_teacher_only.yaml", "rounds=10", "eval.every=100", "method.params.teacher_steps=100"]),
 "ph_local": (P, ["configs/methods/local.yaml", "rounds=10", "eval.every=100"]),
 "re_naive": (R, ["configs/methods/fedavg_naive.yaml", "rounds=10", "eval.every=100"]),
 "re_marginal": (R, ["configs/methods/marginal.yaml", "rounds=10", "eval.every=100"]),
 # a smaller phantom of the same field of view (40 x 40 x 30 voxels of 9.6 x 8 x 8 mm, 16^3 patches: multiples of the U-Net's 8): a first size for six hours
 "sm_fedavg": (P, ["configs/methods/fedavg.yaml", "rounds=10", "eval.every=5", *SMALL]),
 "sm_fedkd": (P, ["configs/methods/fedkd.yaml", "rounds=10", "eval.every=100", "method.params.teacher_steps=100", *SMALL]),
 "re_fedavg": (R, ["configs/methods/fedavg.yaml", "rounds=10", "eval.every=5"]),
 "re_fedkd": (R, ["configs/methods/fedkd.yaml", "rounds=10", "eval.every=100", "method.params.teacher_steps=100"]),
}
for k in which: cell(k, *cells[k])
