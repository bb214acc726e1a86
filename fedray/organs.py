"""The study's vocabulary: global structure names and their label values in fully-labelled maps.

`ORGANS` are the 7 abdominal organs (the default study, `data.organs`). `TUMOURS` are lesions that a
study may add ("+ tumour where present", as in the MOTS datasets); each lies inside its host organ
(`TUMOUR_HOSTS`). `STRUCTURES` is everything a study, a site's label map or a hospital may name.

Label maps are exclusive (one value per voxel): a tumour voxel holds the tumour's value, so where a
study names a tumour, its host organ's label means the organ without that tumour (liver parenchyma).
A site that annotates the organ but not its tumour calls those voxels the organ, as a hospital without
tumour annotations would.
"""

from __future__ import annotations

# Label value = index + 1 in fully-labelled maps written by fedray (0 is background).
ORGANS: tuple[str, ...] = (
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "pancreas",
    "stomach",
    "gallbladder",
)

# After the organs, so the organs keep values 1..7 and tumours get 8, 9, 10.
TUMOURS: tuple[str, ...] = (
    "liver_tumour",
    "kidney_tumour",
    "pancreas_tumour",
)

# The organs a tumour can grow in (one of them per case).
TUMOUR_HOSTS: dict[str, tuple[str, ...]] = {
    "liver_tumour": ("liver",),
    "kidney_tumour": ("kidney_left", "kidney_right"),
    "pancreas_tumour": ("pancreas",),
}

# Every name a study (data.organs), a site's labels or a hospital may use.
STRUCTURES: tuple[str, ...] = ORGANS + TUMOURS


def organ_label(organ: str) -> int:
    """Label value of `organ` (an organ or a tumour) in a fully-labelled map (1-based).

    The organs are 1..7 and the tumours 8..10, in `STRUCTURES` order.
    """
    return STRUCTURES.index(organ) + 1
