"""The compute platform a run trained on, and its one-line label."""

from __future__ import annotations

import torch

from fedray.tracking.provenance import compute_platform, platforms_label

XEON = {"cpu": "Xeon", "cpu_kernels": "AVX512", "torch": "2.13.0+cpu", "gpu": ""}
EPYC = {"cpu": "EPYC", "cpu_kernels": "AVX2", "torch": "2.13.0+cpu", "gpu": ""}


def test_compute_platform_names_the_cpu_its_kernels_and_torch():
    platform = compute_platform(torch.device("cpu"))
    assert set(platform) == {"cpu", "cpu_kernels", "torch", "gpu"}
    assert platform["cpu"] and platform["torch"] == torch.__version__ and platform["gpu"] == ""
    assert platform["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512, DEFAULT


def test_platforms_label_gives_each_session_from_the_round_it_began_at():
    sessions = [{"from_round": 1, "platforms": [XEON]}, {"from_round": 45, "platforms": [EPYC, XEON]}]
    assert platforms_label(sessions) == (
        "from round 1: Xeon (AVX512, torch 2.13.0+cpu); "
        "from round 45: EPYC (AVX2, torch 2.13.0+cpu) + Xeon (AVX512, torch 2.13.0+cpu)")
    gpu = {**XEON, "gpu": "NVIDIA H200"}
    assert platforms_label([{"from_round": 1, "platforms": [gpu]}]) == (
        "from round 1: Xeon (AVX512, torch 2.13.0+cpu, NVIDIA H200)")
    # a checkpoint from before platforms were recorded, resumed on a known one
    assert platforms_label([{"from_round": 1, "platforms": None}, {"from_round": 9, "platforms": [XEON]}]) == (
        "from round 1: not recorded; from round 9: Xeon (AVX512, torch 2.13.0+cpu)")
    assert platforms_label(None) == platforms_label([]) == ""
