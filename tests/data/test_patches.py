"""The patch sampler: RandCropByPosNegLabeld's draw rule by plain indexing, padding, and one-batch-ahead prefetch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import stats

from fedray.data.case_store import CaseArrays
from fedray.data.patches import PatchSampler, Prefetched, first_batches
from fedray.errors import DataError


def box_case(shape=(20, 18, 16), box=(slice(4, 8), slice(5, 8), slice(6, 11))) -> CaseArrays:
    """A volume whose image is the flat voxel index and whose label is one organ's box."""
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[box] = 1
    return CaseArrays(image, label, np.flatnonzero(label), np.array([True, False]))


def test_centres_follow_the_foreground_ratio_and_are_uniform_over_foreground_and_volume():
    case, n = box_case(), 20000
    size, foreground = case.label.size, len(case.foreground)
    for ratio in (0.0, 0.8):
        sampler, rng = PatchSampler((8, 8, 8), ratio, 1), np.random.default_rng(0)
        flats = np.array([np.ravel_multi_index(sampler.centre(case, rng), case.label.shape) for _ in range(n)])
        on_foreground = np.isin(flats, case.foreground)
        expected = ratio + (1 - ratio) * foreground / size  # "anywhere" lands on foreground too
        assert abs(on_foreground.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
        counts = np.bincount(flats[on_foreground], minlength=size)[case.foreground]  # uniform over foreground
        assert stats.chisquare(counts).pvalue > 1e-3
        background = np.bincount(flats[~on_foreground] % 97, minlength=97)  # and over the volume: 97 residue bins
        expected_bins = np.bincount(np.setdiff1d(np.arange(size), case.foreground) % 97, minlength=97)
        assert stats.chisquare(background, expected_bins / expected_bins.sum() * background.sum()).pvalue > 1e-3


def test_a_patch_is_the_array_around_its_centre_moved_inside_the_volume():
    case = box_case()
    sampler = PatchSampler((8, 6, 4), 1.0, 1)
    image, label = sampler.crop_at(case, (10, 9, 8))  # fits: starts at centre - size // 2
    assert np.array_equal(image, case.image[6:14, 6:12, 6:10]) and np.array_equal(label, case.label[6:14, 6:12, 6:10])
    image, _ = sampler.crop_at(case, (0, 17, 15))  # at the corner: moved in
    assert np.array_equal(image, case.image[0:8, 12:18, 12:16])


def test_a_volume_smaller_than_the_patch_is_padded_symmetrically_with_zeros():
    case = box_case(shape=(4, 5, 16), box=(slice(1, 3), slice(1, 3), slice(2, 4)))
    image, label = PatchSampler((8, 8, 8), 1.0, 1).crop_at(case, (2, 2, 3))
    assert image.shape == (8, 8, 8) and label.dtype == np.uint8
    assert np.array_equal(image[2:6, 1:6, :], case.image[:, :, 0:8])  # 4 -> 2 + 4 + 2; 5 -> 1 + 5 + 2
    assert not image[:2].any() and not image[6:].any() and not image[:, :1].any() and not image[:, 6:].any()


def test_batches_are_seeded_and_every_patch_of_ratio_one_holds_foreground():
    cases = [box_case(), box_case(shape=(12, 12, 12), box=(slice(0, 2), slice(0, 2), slice(0, 2)))]
    sampler = PatchSampler((8, 8, 8), 1.0, 4)
    first, again = next(sampler.batches(cases, 3)), next(sampler.batches(cases, 3))
    assert first.image.shape == (4, 1, 8, 8, 8) and first.image.dtype == torch.float32
    assert first.label.dtype == torch.long and first.labelled.tolist() == [[True, False]] * 4
    assert torch.equal(first.image, again.image) and torch.equal(first.label, again.label)
    assert all(int(first.label[i].sum()) > 0 for i in range(4))
    assert not torch.equal(next(sampler.batches(cases, 4)).image, first.image)
    with pytest.raises(DataError, match="no cases"):
        next(sampler.batches([], 3))


def test_prefetching_gives_the_same_batches_and_stops_with_its_context():
    cases = [box_case()]
    sampler = PatchSampler((8, 8, 8), 0.5, 2)
    plain = sampler.batches(cases, 11)
    expected = [next(plain) for _ in range(5)]
    before = threading.active_count()
    with Prefetched(sampler.batches(cases, 11)) as ahead:
        got = [next(ahead) for _ in range(5)]
    assert threading.active_count() == before  # the thread is gone
    assert all(torch.equal(a.image, b.image) and torch.equal(a.label, b.label) for a, b in zip(got, expected))
    with Prefetched(sampler.batches([], 11)) as failing, pytest.raises(DataError, match="no cases"):
        next(failing)  # an error while preparing is raised in the consumer


@pytest.mark.parametrize("prefetch", [False, True])
def test_first_batches_draws_exactly_the_steps_it_hands_out_and_closes_the_generator(prefetch):
    cases = [box_case()]
    sampler = PatchSampler((8, 8, 8), 0.5, 2)
    plain = sampler.batches(cases, 11)
    expected = [next(plain) for _ in range(3)]
    drawn, closed = [], []

    def counted():
        try:
            for batch in sampler.batches(cases, 11):
                drawn.append(batch)
                yield batch
        finally:
            closed.append(True)

    before = threading.active_count()
    with first_batches(counted(), 3, prefetch) as batches:
        got = list(batches)
    assert len(got) == len(drawn) == 3  # no batch is drawn ahead of a step that never comes
    assert closed == [True] and threading.active_count() == before
    assert all(torch.equal(a.image, b.image) and torch.equal(a.label, b.label) for a, b in zip(got, expected))


def test_closing_a_prefetch_blocked_on_a_full_queue_wakes_its_thread():
    sampler = PatchSampler((8, 8, 8), 0.5, 2)
    ahead = Prefetched(sampler.batches([box_case()], 11))
    next(ahead)
    while not ahead._ready.full():  # the thread has prepared the next batch and waits to put another
        threading.Event().wait(0.001)
    ahead.close()
    assert not ahead._thread.is_alive()
