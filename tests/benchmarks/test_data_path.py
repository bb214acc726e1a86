"""The data-path benchmark's plot, drawn from a hand-made record."""

from __future__ import annotations

from fedray.benchmarks.data_path import plot


def test_the_plot_draws_memory_checks_and_steps_from_a_record(tmp_path):
    record = {
        "memory": [
            {"cases_per_site": 3, "peak_pss_gb": 2.3, "preprocessed_cases": 9, "session": 7},  # first start: left out
            {"cases_per_site": 3, "peak_pss_gb": 2.33, "preprocessed_cases": 0, "session": 7},
            {"cases_per_site": 30, "peak_pss_gb": 2.35, "preprocessed_cases": 0, "session": 7},
        ],
        "checks": [{"cases_checked": 12, "full_s": 60.5, "headers_only_s": 0.03},
                   {"cases_checked": 93, "full_s": 476.2, "headers_only_s": 0.19}],
        "step": [{"patch": 64, "local_step_s_median": 0.165, "bare_step_s_median": 0.155}],
    }
    path = tmp_path / "bench_data_path.png"
    plot(record, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    plot({"memory": record["memory"][:1]}, tmp_path / "partial.png")  # a run stopped early still draws
    assert (tmp_path / "partial.png").is_file()
