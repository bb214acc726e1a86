"""SGD step time of the paper's multi-head U-Net at a CPU width against MONAI's U-Net, 1 thread.

Run: `python -m fedray.benchmarks.trunk` (writes results/bench_trunk.json). Each variant is
timed `steps` times per repeat, repeats interleaved, and the JSON keeps the medians; figures
are thread CPU seconds, which a shared machine's other jobs disturb less than wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedray.config import ModelConfig
from fedray.models.factory import build_model, count_parameters
from fedray.models.multihead import WSConv3d

N_ORGANS = 7
WIDTHS = (8, 16, 32, 64)


def _models() -> dict[str, tuple[nn.Module, torch.memory_format]]:
    """Variant name -> (network, standardised-kernel memory format it runs with)."""
    def build(**fields) -> nn.Module:
        torch.manual_seed(0)
        return build_model(ModelConfig(channels=WIDTHS, **fields), N_ORGANS)

    paper = dict(name="multihead_unet", blocks=(1,) * len(WIDTHS), norm_groups=16)
    contiguous, channels_last = torch.contiguous_format, torch.channels_last_3d
    return {
        "multihead_unet_sigmoid_before": (build(**paper, output="sigmoid"), contiguous),
        "multihead_unet_sigmoid": (build(**paper, output="sigmoid"), channels_last),
        "multihead_unet_softmax_before": (build(**paper, output="softmax"), contiguous),
        "multihead_unet_softmax": (build(**paper, output="softmax"), channels_last),
        "monai_unet_res1": (build(output="sigmoid", num_res_units=1), contiguous),
        "monai_unet_res0": (build(output="sigmoid", num_res_units=0), contiguous),
    }


def _sgd_step(model: nn.Module, patch: int, batch: int) -> Callable[[], None]:
    """One SGD (1e-2, momentum 0.9) step on a fixed batch with a per-channel BCE loss."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, patch, patch, patch, generator=generator)
    with torch.no_grad():
        channels = model(images[:1]).shape[1]
    targets = (torch.rand(batch, channels, patch, patch, patch, generator=generator) > 0.5).float()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(images), targets).backward()
        optimizer.step()

    return step


def _median_step_s(step: Callable[[], None], steps: int) -> float:
    """Median thread CPU seconds of `steps` calls, after one warm-up call."""
    step()
    times = []
    for _ in range(steps):
        start = time.thread_time()
        step()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def measure(patch: int = 32, batch: int = 2, steps: int = 5, repeats: int = 3) -> dict:
    """Median step seconds per variant, and the before/after speed-up of the paper trunk."""
    torch.set_num_threads(1)
    models = _models()
    steps_by_variant = {name: _sgd_step(model, patch, batch) for name, (model, _) in models.items()}
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (_, kernel_format) in models.items():
            WSConv3d.kernel_memory_format = kernel_format
            samples[name].append(_median_step_s(steps_by_variant[name], steps))
    WSConv3d.kernel_memory_format = torch.channels_last_3d
    step_s = {name: statistics.median(times) for name, times in samples.items()}
    return {
        "benchmark": "trunk",
        "widths": list(WIDTHS),
        "blocks_per_level": 1,
        "organs": N_ORGANS,
        "patch": [patch] * 3,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "steps_per_repeat": steps,
        "repeats": repeats,
        "clock": "thread CPU time",
        "parameters": {name: count_parameters(model) for name, (model, _) in models.items()},
        "step_s_median": step_s,
        "step_s_per_repeat": samples,
        "speedup_sigmoid": step_s["multihead_unet_sigmoid_before"] / step_s["multihead_unet_sigmoid"],
        "speedup_softmax": step_s["multihead_unet_softmax_before"] / step_s["multihead_unet_softmax"],
        "multihead_over_monai_res1": step_s["multihead_unet_sigmoid"] / step_s["monai_unet_res1"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_trunk.json"))
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(patch=args.patch, steps=args.steps, repeats=args.repeats)
    for name, seconds in result["step_s_median"].items():
        print(f"{name:32s} {seconds * 1000:7.1f} ms/step")
    print(f"speed-up sigmoid {result['speedup_sigmoid']:.2f}x, softmax {result['speedup_softmax']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
