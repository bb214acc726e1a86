"""Compare a rerun with the study it reproduces, metric by metric, round by round."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedray.messages import TIMING_METRICS

# Wall-clock metrics (TIMING_METRICS) differ between any two runs; everything else must match exactly on CPU.


def compare_rounds(original: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """One row per metric: rounds compared, largest absolute difference, and whether all match.

    NaN equals NaN (a round without evaluation); timing metrics are listed but not required to match.
    """
    rows = []
    for metric in [c for c in original.columns if c not in ("round",)]:
        a = original[metric].to_numpy(dtype=float)
        b = rerun[metric].to_numpy(dtype=float) if metric in rerun else np.full_like(a, np.nan)
        n = min(len(a), len(b))
        same = np.array_equal(a[:n], b[:n], equal_nan=True) and len(a) == len(b)
        diff = np.nanmax(np.abs(a[:n] - b[:n]), initial=0.0) if n else np.nan
        rows.append(
            {
                "metric": metric,
                "rounds": n,
                "max_abs_diff": float(diff),
                "match": "timing (not compared)" if metric in TIMING_METRICS else ("yes" if same else "NO"),
            }
        )
    return pd.DataFrame(rows)
