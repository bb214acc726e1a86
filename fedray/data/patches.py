"""Seeded random training patches cropped from (memory-mapped) cases by plain indexing, prepared one batch
ahead where the step leaves a core free for it."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from fedray.config import AugmentConfig
from fedray.data.case_store import CaseArrays
from fedray.errors import DataError
from fedray.training.hooks import Batch


class PatchSampler:
    """Random training patches of a client's cases, reproducible from a seed.

    Each patch picks a case uniformly; with probability `foreground_ratio` it is centred on a
    voxel drawn uniformly from the case's foreground (every voxel of an organ its site labels,
    from the locations stored at preprocessing), otherwise on a voxel drawn uniformly from the
    whole volume; the centre is then moved just enough for the patch to fit. These are MONAI
    RandCropByPosNegLabeld's rules (which draws the others from background voxels only), without
    its whole-volume foreground scan per call. A volume smaller than the patch is padded
    symmetrically with zeros (as SpatialPadd). Each case carries its own `labelled` organ mask, so
    a client may pool cases from sites with different label sets. Optional augmentation changes
    each patch after cropping, from its own random stream, so it never changes which patches are drawn.
    """

    def __init__(
        self,
        patch_size: tuple[int, int, int],
        foreground_ratio: float,
        batch_size: int,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.foreground_ratio = foreground_ratio
        self.batch_size = batch_size
        self.augment = augmentation(augment) if augment is not None and augment.enabled else None

    def batches(self, cases: Sequence[CaseArrays | dict], seed: int) -> Iterator[Batch]:
        """Endless batches of `cases`; the same cases and seed give the same patches and augmentations.

        `cases` are CaseArrays (from the case store) or loaded case dicts (`load_cases`), whose
        foreground is then found once here.
        """
        if not cases:
            raise DataError("a hospital has no cases")
        cases = [c if isinstance(c, CaseArrays) else CaseArrays.from_loaded(c) for c in cases]
        rng = np.random.default_rng(seed)
        if self.augment is not None:
            # A stream apart from `rng`: turning augmentation on leaves the cases and patches as they were.
            stream = np.random.default_rng([seed, 1])
            self.augment.set_random_state(seed=int(stream.integers(2**31)))
        while True:
            picks = rng.integers(len(cases), size=self.batch_size)
            patches = [self.crop(cases[i], rng) for i in picks]
            if self.augment is not None:
                patches = [self._augmented(image, label) for image, label in patches]
            yield Batch(
                image=torch.from_numpy(np.stack([image for image, _ in patches])[:, None]),
                label=torch.from_numpy(np.stack([label for _, label in patches])[:, None].astype(np.int64)),
                labelled=torch.from_numpy(np.stack([cases[i].labelled for i in picks])),
            )

    def centre(self, case: CaseArrays, rng: np.random.Generator) -> tuple[int, int, int]:
        """The voxel a patch is drawn around: foreground with probability foreground_ratio, else any."""
        shape = case.label.shape
        foreground = len(case.foreground)
        if foreground and rng.random() < self.foreground_ratio:
            flat = int(case.foreground[rng.integers(foreground)])
        else:  # as RandCropByPosNegLabeld, a case without foreground gives patches from anywhere
            flat = int(rng.integers(int(np.prod(shape))))
        return tuple(int(i) for i in np.unravel_index(flat, shape))

    def crop(self, case: CaseArrays, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (image, label) patch of `case` around a drawn centre, copied out of its (mapped) arrays."""
        return self.crop_at(case, self.centre(case, rng))

    def crop_at(self, case: CaseArrays, centre: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The patch around `centre`, moved just enough to fit the (zero-padded) volume."""
        shape = case.label.shape
        source, target = [], []
        for c, size, p in zip(centre, shape, self.patch_size):
            before = max(p - size, 0) // 2  # symmetric padding of a small volume
            start = min(max(c + before - p // 2, 0), max(size, p) - p) - before  # in the unpadded volume
            low, high = max(start, 0), min(start + p, size)
            source.append(slice(low, high))
            target.append(slice(low - start, high - start))
        image = np.zeros(self.patch_size, dtype=np.float32)
        label = np.zeros(self.patch_size, dtype=np.uint8)
        image[tuple(target)] = case.image[tuple(source)]
        label[tuple(target)] = case.label[tuple(source)]
        return image, label

    def _augmented(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.augment({"image": torch.from_numpy(image[None]), "label": torch.from_numpy(label[None])})
        return _numpy(out["image"])[0].astype(np.float32, copy=False), _numpy(out["label"])[0].astype(np.uint8)


def _numpy(tensor) -> np.ndarray:
    return (tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)).numpy()


def augmentation(cfg: AugmentConfig) -> Compose:
    """Random flips, intensity scale and shift, rotation and zoom of an image/label patch."""
    keys = ["image", "label"]
    steps: list = [RandFlipd(keys=keys, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(3)]
    steps += [
        RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=cfg.intensity_prob),
        RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob),
    ]
    if cfg.affine_prob > 0:
        angle = float(np.deg2rad(cfg.rotate_deg))
        steps.append(
            RandAffined(
                keys=keys,
                prob=cfg.affine_prob,
                rotate_range=(angle, angle, angle),
                scale_range=(cfg.zoom, cfg.zoom, cfg.zoom),
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),  # image edges continue; labels outside are background
            )
        )
    return Compose(steps)


class Prefetched:
    """Iterates `batches` one batch ahead in a background thread, so the next batch is cropped while
    the current step runs (numpy copies and torch kernels release the GIL). The batches and their
    order are exactly those of `batches`; `close()` stops the thread (a context manager does it)."""

    _DONE = object()

    def __init__(self, batches: Iterator[Batch], depth: int = 1) -> None:
        self._batches = batches
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="patch-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(batch):
                    return
        except BaseException as error:  # noqa: BLE001 - raised in the consumer by __next__
            self._put(error)
            return
        self._put(self._DONE)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched:
        return self

    def __next__(self) -> Batch:
        item = self._ready.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop preparing batches; returns once the thread has stopped (it uses the sampler's state)."""
        self._stop.set()
        # A thread blocked on the full queue would only see the stop at its next put timeout (up to
        # 50 ms, every task): emptying the queue wakes it now.
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()  # the generator's cases (and their memory maps) go with it

    def __enter__(self) -> Prefetched:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def first_batches(batches: Iterator[Batch], count: int, prefetch: bool) -> Iterator[Iterator[Batch]]:
    """The first `count` of `batches` and no more (a task's steps: none is drawn to be thrown away),
    prepared one ahead in a thread when `prefetch`; the generator is closed on exit.

    Prefetch only where the step leaves a core idle, as on a GPU. A CPU actor's torch threads use all
    the cores it books, so a thread cropping beside them only competes for those cores and the GIL,
    and starting and stopping it each task cost more than the crops it would hide (the scale
    workload's two 32^3 batches take well under a millisecond, its step tens of milliseconds).
    """
    limited = itertools.islice(batches, count)
    try:
        if prefetch:
            with Prefetched(limited) as ready:
                yield ready
        else:
            yield limited
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # the generator's cases (and their memory maps) go with it
