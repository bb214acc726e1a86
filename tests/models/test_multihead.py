"""The multi-head U-Net: paper parameter counts, head routing, gradients, weight standardisation."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fedray.models.multihead import MultiHeadUNet3D, WSConv3d

TINY = dict(widths=(8, 16, 32), blocks=(1, 1, 1), norm_groups=4)


def parameters_by_module(model: torch.nn.Module) -> Counter:
    """Parameter counts keyed by top-level module name."""
    counts: Counter = Counter()
    for name, parameter in model.named_parameters():
        counts[name.split(".")[0]] += parameter.numel()
    return counts


@pytest.fixture(scope="module")
def tiny_model() -> MultiHeadUNet3D:
    torch.manual_seed(0)
    return MultiHeadUNet3D(3, **TINY)


@pytest.fixture(scope="module")
def tiny_input() -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))


def test_paper_width_parameter_counts_match_derivation():
    # Built only, never run: a forward pass at paper width is too slow for the unit tests.
    model = MultiHeadUNet3D(7, outputs_per_head=2)
    counts = parameters_by_module(model)
    assert counts["stem"] + counts["encoder"] + counts["fusion"] == 15_443_424
    assert counts["decoder"] == 1_842_496
    assert counts["embedding"] == 328
    assert counts["heads"] == 7 * 162 == 1_134
    head3 = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(MultiHeadUNet3D.head_parameter_prefix(3))
    )
    assert head3 == 162
    total = sum(counts.values())
    # The paper's 17,287,894 minus the 512 parameters of DoDNet's unused GAP GroupNorm.
    assert total == 17_287_382 == 17_287_894 - 512
    assert round(total / 1e6, 2) == 17.29


def test_single_head_teacher_parameter_count():
    teacher = MultiHeadUNet3D(1, outputs_per_head=2)
    assert sum(p.numel() for p in teacher.parameters()) == 17_287_382 - 6 * 162 == 17_286_410


def test_forward_all_shape_and_head_major_order(tiny_model, tiny_input):
    tiny_model.eval()
    with torch.no_grad():
        all_heads = tiny_model.forward_all(tiny_input)
        assert all_heads.shape == (2, 3, 16, 16, 16)
        assert torch.equal(tiny_model(tiny_input), all_heads)
        for head in range(3):
            single = tiny_model.forward_head(tiny_input, head)
            assert single.shape == (2, 1, 16, 16, 16)
            assert torch.allclose(all_heads[:, head : head + 1], single, atol=1e-6)


def test_head_major_order_with_two_outputs_per_head(tiny_input):
    model = MultiHeadUNet3D(2, outputs_per_head=2, **TINY).eval()
    with torch.no_grad():
        all_heads = model.forward_all(tiny_input)
        assert all_heads.shape == (2, 4, 16, 16, 16)
        assert torch.allclose(all_heads[:, 2:4], model.forward_head(tiny_input, 1), atol=1e-6)


def test_embed_shape(tiny_model, tiny_input):
    with torch.no_grad():
        assert tiny_model.embed(tiny_input).shape == (2, 8, 16, 16, 16)


def test_gradients_reach_every_parameter(tiny_input):
    model = MultiHeadUNet3D(3, **TINY).train()
    model.forward_all(tiny_input).sum().backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_indivisible_input_size_names_divisor(tiny_model):
    with pytest.raises(ValueError, match=r"size 14 .*divisible by 4"):
        tiny_model.embed(torch.zeros(1, 1, 16, 14, 16))


def test_weight_standardisation_gives_zero_mean_unit_std_filters():
    torch.manual_seed(0)
    conv = WSConv3d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(3.0)
    filters = conv.standardized_weight().flatten(start_dim=1)
    assert torch.allclose(filters.mean(dim=1), torch.zeros(6), atol=1e-6)
    assert torch.allclose(filters.std(dim=1), torch.ones(6), atol=1e-5)


def test_eval_mode_is_deterministic(tiny_model, tiny_input):
    tiny_model.eval()
    with torch.no_grad():
        assert torch.equal(tiny_model(tiny_input), tiny_model(tiny_input))


def _layer_types(module: torch.nn.Module) -> list[str]:
    return [type(layer).__name__ for layer in module]


def test_block_layout_is_the_papers_pre_activation_residual_design():
    # paper.md: stem conv3, stages of NoBottleneck blocks (GN-ReLU-conv3-GN-ReLU-conv3 plus a
    # shortcut), stage 0 at stride 1, the others stride 2; one decoder block per skip level.
    model = MultiHeadUNet3D(7, outputs_per_head=2)
    assert [len(stage) for stage in model.encoder] == [1, 2, 2, 2, 2]
    strides = [stage[0].residual[2].stride for stage in model.encoder]
    assert strides == [(1, 1, 1)] + [(2, 2, 2)] * 4
    block = model.encoder[1][0]
    assert _layer_types(block.residual) == [
        "GroupNorm", "ReLU", "WSConv3d", "GroupNorm", "ReLU", "WSConv3d"
    ]
    assert [conv.kernel_size for conv in block.residual[2::3]] == [(3, 3, 3)] * 2
    assert _layer_types(block.shortcut) == ["GroupNorm", "ReLU", "WSConv3d"]
    assert isinstance(model.encoder[1][1].shortcut, torch.nn.Identity)
    assert all(norm.num_groups == 16 for norm in model.modules() if isinstance(norm, torch.nn.GroupNorm))
    assert len(model.decoder) == 4
    assert _layer_types(model.heads[0]) == ["Conv3d", "ReLU", "Conv3d", "ReLU", "Conv3d"]


def test_channels_last_kernel_computes_the_same_function_and_gradients(tiny_input):
    # The kernel's memory format only picks oneDNN's code path: outputs and gradients agree
    # with the default layout up to float rounding.
    results = {}
    for memory_format in (torch.contiguous_format, torch.channels_last_3d):
        WSConv3d.kernel_memory_format = memory_format
        try:
            torch.manual_seed(0)
            model = MultiHeadUNet3D(3, **TINY)
            output = model(tiny_input)
            output.square().mean().backward()
            results[memory_format] = (output.detach(), [p.grad for p in model.parameters()])
        finally:
            WSConv3d.kernel_memory_format = torch.channels_last_3d
    (out_a, grads_a), (out_b, grads_b) = results.values()
    assert torch.allclose(out_a, out_b, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads_a, grads_b))
    assert WSConv3d(2, 2, 3).standardized_weight().is_contiguous(memory_format=torch.channels_last_3d)
