"""Every configs/methods fragment validates in a minimal study; every method name resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedray.config import config_from_data, deep_merge
from fedray.methods import method_spec
from fedray.strategies import get_strategy_class
from fedray.methods import METHODS
from fedray.strategies.condist import ConDist
from fedray.strategies.fedprox import FedProx
from fedray.strategies.marginal import Marginal

METHODS_DIR = Path(__file__).resolve().parents[2] / "configs" / "methods"
FRAGMENTS = sorted(METHODS_DIR.glob("*.yaml"))


def test_new_methods_are_registered():
    assert get_strategy_class("fedprox") is FedProx
    assert get_strategy_class("marginal") is Marginal
    assert get_strategy_class("condist") is ConDist


def test_every_registered_method_has_an_implementation_and_loading_a_config_needs_no_torch():
    for name in METHODS:
        assert get_strategy_class(name).__name__ == method_spec(name).implementation.split(":")[1]
    code = (
        "import sys; from fedray.config import config_from_data; "
        "config_from_data({'name': 't', 'method': {'name': 'fedkd', 'params': {'teacher_steps': 3}}, "
        "'model': {'output': 'sigmoid'}, 'federation': {'hospitals': [{'organs': ['liver']}]}, "
        "'data': {'organs': ['liver']}}); loaded = [m for m in ('torch', 'monai') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_all_method_fragments_exist():
    expected = (
        "fedavg_naive fedavg fedprox marginal marginal_exclusion condist fedadam fedyogi fedavgm"
    )
    assert set(expected.split()) <= {path.stem for path in FRAGMENTS}


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda path: path.stem)
def test_fragment_validates_in_a_minimal_study(path):
    fragment = yaml.safe_load(path.read_text())
    assert {"method", "model"} <= set(fragment) <= {"method", "model", "federation"}
    study = {
        "name": "t",
        "federation": {"hospitals": [{"organs": ["liver", "spleen"]}]},
        "data": {"organs": ["liver", "spleen"]},
    }
    config = config_from_data(deep_merge(study, fragment))
    assert isinstance(config.method.params, method_spec(config.method.name).params)
