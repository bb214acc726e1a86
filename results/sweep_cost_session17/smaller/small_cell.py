"""Two phantom cells of the sweep on a smaller phantom of the same field of view (40 x 40 x 30 voxels of
9.6 x 8 x 8 mm, 16^3 patches), trained to the sweep's plateau rule: multi-head FedAvg and marginal, seed 0.

    python results/sweep_cost_session17/smaller/small_cell.py   # from the checkout's root; runs in /tmp/smallcell
"""
import json, subprocess, sys, time, glob, shutil, yaml, os
d = yaml.safe_load(open("configs/bench/mots7_phantom.yaml"))
SMALL = ["data.phantom.shape=[40,40,30]", "data.phantom.spacing=[9.6,8.0,8.0]", "data.patch_size=[16,16,16]", "eval.roi_size=[16,16,16]"]
for label, fragment, extra in [("fedavg", "configs/methods/fedavg.yaml", []), ("marginal", "configs/methods/marginal.yaml", ["rounds=450"])]:
    o = [x for x in d["overrides"] if not x.startswith("tracking.results_dir")]
    out = f"/tmp/smallcell/{label}"; shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "fedray.cli", "run", d["study"], fragment, *o, *SMALL, *extra,
                        f"tracking.results_dir={out}", f"tracking.run_name=small_{label}_s0", "seed=0"],
                       capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"})
    print(label, r.returncode, round(time.time() - t), r.stderr[-500:] if r.returncode else "", flush=True)
