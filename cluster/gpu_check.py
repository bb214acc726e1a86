"""One-shot GPU check: pack 4 hospital actors at 0.25 GPU on one GPU, enforce the memory share, time it.

Run on a machine with one CUDA GPU (see cluster/README.md):
    python cluster/gpu_check.py --out results/gpu_check.json
It needs fedray's hospital side (torch, ray, monai, nibabel), not MLflow. It writes a phantom, starts a
private Ray instance with 1 GPU, places 4 HospitalWorker actors with num_gpus=0.25 (the worker that
`fedray run ... resources.gpus_per_actor=0.25` builds in each hospital actor, with a probe added: cases
preprocessed into the case store, patches read memory-mapped from there, summed on the actor), and records, per actor: the GPU Ray gave it, the
memory fraction torch enforces, peak memory of a local update of the paper-width multi-head U-Net on
64x128x128 patches, and whether an allocation above its share is refused. It also times 4 local
updates run one actor at a time against 4 run at once on the packed GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import torch

from fedray.config import config_from_data
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.models.factory import build_model
from fedray.simulation.placement import plan_actors
from fedray.simulation.worker import HospitalWorker


class ProbedHospitalWorker(HospitalWorker):
    """The real hospital actor plus two read-outs for this check."""

    def report(self) -> dict:
        """Where this actor runs and what it may use."""
        props = torch.cuda.get_device_properties(self.device) if self.device.type == "cuda" else None
        return {
            "device": str(self.device),
            "ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_name": props.name if props else None,
            "gpu_total_gib": props.total_memory / 2**30 if props else None,
            "peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / 2**30 if props else None,
            "pid": os.getpid(),
        }

    def try_allocate(self, fraction_of_gpu: float) -> str:
        """Try to allocate `fraction_of_gpu` of the card; 'refused' if the share cap stops it."""
        total = torch.cuda.get_device_properties(self.device).total_memory
        torch.cuda.empty_cache()  # count only live tensors, not blocks the allocator keeps cached
        try:
            block = torch.empty(int(total * fraction_of_gpu), dtype=torch.uint8, device=self.device)
            del block
            return "allocated"
        except torch.OutOfMemoryError:
            return "refused"
        finally:
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: small model and patches")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    patch = [16, 16, 16] if args.tiny else [64, 128, 128]
    widths = [4, 8, 16] if args.tiny else [32, 64, 128, 256, 256]
    config = config_from_data(
        {
            "name": "gpu_check",
            "data": {
                "cache_dir": str(work / "data"),
                # the paper's phantom: a 64 x 128 x 128 patch fits it (config validation refuses larger)
                "phantom": {"shape": [128, 128, 128], "spacing": [3.0, 2.5, 1.875], "test_cases": 1},
                "patch_size": patch,
            },
            "federation": {"rule": {"count": 4, "organs_per_hospital": 2, "cases": 2}},
            "model": {"name": "multihead_unet", "output": "sigmoid", "channels": widths,
                      "blocks": [1] * len(widths) if args.tiny else [1, 2, 2, 2, 2], "norm_groups": 4 if args.tiny else 16},
            "method": {"name": "fedkd", "params": {"teacher_kd_weight": 0.0}},
            "train": {"local_steps": args.steps, "batch_size": 2, "optimizer": "sgd", "lr": 0.01},
            "eval": {"roi_size": patch},
            "resources": {"cpus_per_actor": 0.5 if args.tiny else 2, "gpus_per_actor": 0.25},
        }
    )
    cpus_per_actor = config.resources.cpus_per_actor
    hospitals, _ = prepare_hospitals(config)
    ray.init(address="local", num_cpus=2 if args.tiny else 8, num_gpus=1, include_dashboard=False)
    plans = plan_actors(config, hospitals, ray.cluster_resources())
    remote = ray.remote(ProbedHospitalWorker)
    actors = [
        remote.options(num_cpus=cpus_per_actor, num_gpus=0.25).remote(config, max(1, int(cpus_per_actor)), 0.25)
        for _ in plans
    ]
    ray.get([a.ready.remote() for a in actors])
    torch.manual_seed(0)
    payload = ray.put(encode_state({k: v.numpy() for k, v in build_model(config.model, 7).state_dict().items()}))
    # Each actor trains its home hospital from the case store (the CUDA path of `fedray run`: memory-mapped
    # cases -> patches -> batches moved to the actor's GPU; a case not stored yet is written on first use).
    homes = [plan.hospitals[0] for plan in plans]
    data = [stored_cases(h, config.data) for h in homes]

    def round_of(index: int, one_at_a_time: bool) -> list:
        tasks = []
        for actor, hospital, ref in zip(actors, homes, data):
            tasks.append(actor.run.remote(TrainTask(index, hospital, ref, payload)))
            if one_at_a_time:
                ray.get(tasks[-1])
        ray.get(tasks)
        return ray.get([a.flush.remote(index) for a in actors])

    round_of(1, one_at_a_time=False)  # warm-up: cuDNN, allocator
    start = time.perf_counter()
    round_of(2, one_at_a_time=True)
    one_at_a_time = time.perf_counter() - start
    start = time.perf_counter()
    parts = round_of(3, one_at_a_time=False)
    packed = time.perf_counter() - start

    reports = ray.get([a.report.remote() for a in actors])
    on_gpu = all(r["device"].startswith("cuda") for r in reports)
    record = {
        "torch": torch.__version__,
        "ray": ray.__version__,
        "actors": len(actors),
        "gpus_per_actor": 0.25,
        "model_params": sum(p.numel() for p in build_model(config.model, 7).parameters()),
        "patch": list(config.data.patch_size),
        "batch_size": config.train.batch_size,
        "local_steps": config.train.local_steps,
        "actor_reports": reports,
        "same_gpu_for_all": len({tuple(r["ray_gpu_ids"]) for r in reports}) == 1,
        "allocate_20pct_of_gpu": ray.get([a.try_allocate.remote(0.20) for a in actors]) if on_gpu else None,
        "allocate_30pct_of_gpu": ray.get([a.try_allocate.remote(0.30) for a in actors]) if on_gpu else None,
        "seconds_4_updates_one_at_a_time": one_at_a_time,
        "seconds_4_updates_packed": packed,
        "packing_speedup": one_at_a_time / packed,
        "updates_summed_per_actor": [part.count for part in parts],
        "train_losses": [loss for part in parts for loss, _ in part.account.accepted.values()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
