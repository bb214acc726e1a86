"""The command line: bad input gives one paragraph and a non-zero exit, no traceback, nothing in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import tiny_study


def fedray(*args: str, cwd=None) -> subprocess.CompletedProcess:
    # --verbose: Ray's own "Started a local Ray instance" line shows, so tests can tell whether Ray started
    return subprocess.run(
        [sys.executable, "-m", "fedray.cli", "--verbose", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def write_study(tmp_path, **overrides) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study(tmp_path, **overrides)))
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda p: ["run", str(p / "missing.yaml")], "does not exist"),
        (lambda p: ["run", write_study(p), "trian.lr=1"], "Did you mean 'train'?"),
        (lambda p: ["run", write_study(p), "rounds=-2"], "rounds must be >= 1"),
        (lambda p: ["run", write_study(p), "method.name=fedavgg"], "Did you mean 'fedavg'?"),
        (lambda p: ["run", write_study(p), "data.organs=[liver]"], "organ 'spleen' is not a study organ"),
        (
            lambda p: ["run", write_study(p), "data.source=msd", f"data.sites=[{p}]", f"data.test_set={p}"],
            "has no dataset.json",
        ),
    ],
)
def test_bad_input_is_one_paragraph_without_traceback(tmp_path, make_args, expected):
    result = fedray(*make_args(tmp_path))
    assert result.returncode == 2
    assert expected in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr + result.stdout
    assert "Ray instance" not in result.stderr  # reported before Ray starts, at once
    assert not (tmp_path / "results" / "mlflow.db").exists()  # nothing written for an invalid study


def test_organ_that_no_hospital_labels(tmp_path):
    study = tiny_study(tmp_path)
    study["federation"]["hospitals"] = [{"name": "a", "organs": ["liver"], "cases": 1}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    result = fedray("run", str(path), "data.phantom.test_cases=1")
    assert result.returncode == 2
    assert "No hospital labels spleen" in " ".join(result.stderr.split())
    assert "Ray instance" not in result.stderr
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_bad_case_found_while_ray_starts_is_one_paragraph(tmp_path):
    from tests.data.test_sites import blocks, write_msd

    site = write_msd(tmp_path / "site", {"0": "background", "1": "liver"}, {"c0": blocks(l=1)})
    test = write_msd(tmp_path / "test", {"0": "background", "1": "liver"}, {"t0": blocks(l=1)})
    (site / "labels" / "c0.nii.gz").write_bytes(b"not a NIfTI file")  # found by the case checks, not the listing
    result = fedray(
        "run", write_study(tmp_path, federation={"hospitals": [{"organs": ["liver"]}]}), "data.source=msd",
        f"data.sites=[{site}]", f"data.test_set={test}", "data.organs=[liver]",
        "data.patch_size=[8,8,8]", "eval.roi_size=[8,8,8]",  # within the 10 x 8 x 8 volumes (checked first)
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Bad case 'c0' of site 'site'" in " ".join(result.stderr.split())
    assert "Ray instance" in result.stderr  # found by the case checks, in their thread, while Ray started
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_data_phantom_command_writes_msd_folders(tmp_path):
    out = tmp_path / "phantom"
    result = fedray("data", "phantom", "--out", str(out), "--hospitals", "7", "--cases", "1", "--test-cases", "1",
                    "--shape", "32", "32", "32", "--spacing", "12", "10", "7.5")
    assert result.returncode == 0, result.stderr
    manifests = sorted(out.glob("phantom/*/dataset.json"))
    assert len(manifests) == 8  # 7 hospitals + the test set
    organs = [json.loads(m.read_text())["fedray"]["organs"] for m in manifests]
    assert sorted(o for group in organs[:7] for o in group) == sorted(
        ["liver", "spleen", "kidney_left", "kidney_right", "pancreas", "stomach", "gallbladder"]
    )


@pytest.mark.slow  # two whole CLI studies (about 40 s); the default run's CLI studies still run quietly
def test_ray_start_up_lines_are_hidden_unless_verbose(tmp_path):
    quiet = subprocess.run([sys.executable, "-m", "fedray.cli", "run", write_study(tmp_path), "rounds=1"],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Ray instance" not in quiet.stderr and "authentication" not in quiet.stderr.lower()
    assert "Ray instance" in fedray("run", write_study(tmp_path), "rounds=1", "--overwrite").stderr


def test_cli_explains_itself_without_running(tmp_path, capsys):
    from fedray.cli import main

    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("fedray ")
    for group in ("bench", "data", "config"):
        assert main([group]) == 2
        assert f"usage: fedray {group}" in capsys.readouterr().out  # the group's own help, not the top level
    assert main(["methods"]) == 0
    assert "scaffold" in capsys.readouterr().out
    assert main(["config", "show", "configs/quickstart.yaml", "rounds=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["rounds"] == 3 and shown["method"]["params"] == {"weighted": True}
    results = tmp_path / "results"
    assert main(["run", "configs/quickstart.yaml", "--dry-run", f"tracking.results_dir={results}",
                 f"data.cache_dir={tmp_path / 'data'}"]) == 0
    assert not results.exists()  # nothing run, nothing written


def test_a_new_run_never_overwrites_an_old_one(tmp_path):
    from fedray.cli import _unused_run_name
    from fedray.config import config_from_data, save_config

    config = config_from_data(tiny_study(tmp_path))
    assert _unused_run_name(config) is config  # a new name stays as it is
    for name in (config.run_name, f"{config.run_name}-2"):
        (config.run_dir.parent / name).mkdir(parents=True)
    save_config(config, config.run_dir / "config.resolved.yaml")
    renamed = _unused_run_name(config)
    assert renamed.run_name == f"{config.run_name}-3" and renamed.run_dir.name == renamed.run_name


def test_a_study_whose_folder_another_process_holds_is_refused_before_ray_starts(tmp_path):
    from tests.tracking.test_folder_lock import hold_in_another_process

    study = write_study(tmp_path)
    holder = hold_in_another_process(tmp_path / "results" / "tiny")  # e.g. the same study started twice
    try:
        result = fedray("run", study)
    finally:
        holder.kill()
        holder.wait()
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"is in use by another fedray process (pid {holder.pid} on " in message
    assert "Ray instance" not in result.stderr and "Traceback" not in result.stderr + result.stdout
