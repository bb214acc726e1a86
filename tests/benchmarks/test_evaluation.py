"""The evaluation benchmark on small volumes: its figures add up and scoring matches the serial evaluation."""

from __future__ import annotations

import pytest

from fedray.benchmarks.evaluation import run


@pytest.mark.slow  # about a minute on the loaded 2-core machine (volumes written, a model built and run)
def test_evaluation_benchmark_reports_its_ratio(tmp_path):
    result = run(tmp_path, 1, (32, 32, 24), (3.0, 3.0, 5.0), 1, compare_full_grid=True)
    assert result["volumes"] == 1 and len(result["inference_s"]) == len(result["scoring_s"]) == 1
    assert result["evaluation_total_s"] == pytest.approx(result["inference_total_s"] + sum(result["scoring_s"]))
    assert result["evaluation_over_inference"] == pytest.approx(
        result["evaluation_total_s"] / result["inference_total_s"]
    )
    assert result["evaluation_over_inference"] > 1 and result["full_grid_scoring_s_first_volume"] > 0
    assert result["organs_in_reference"] == [7]
