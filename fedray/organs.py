"""The study's organ vocabulary: global organ names and their label values in fully-labelled maps."""

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


def organ_label(organ: str) -> int:
    """Label value of `organ` in a fully-labelled map (1-based)."""
    return ORGANS.index(organ) + 1
