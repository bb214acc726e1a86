"""Every configs/methods fragment validates in a minimal study; every method name resolves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedray.config import config_from_data, deep_merge
from fedray.strategies import get_strategy_class
from fedray.strategies.condist import ConDist
from fedray.strategies.fedprox import FedProx
from fedray.strategies.marginal import Marginal

METHODS_DIR = Path(__file__).resolve().parents[2] / "configs" / "methods"
FRAGMENTS = sorted(METHODS_DIR.glob("*.yaml"))


def test_new_methods_are_registered():
    assert get_strategy_class("fedprox") is FedProx
    assert get_strategy_class("marginal") is Marginal
    assert get_strategy_class("condist") is ConDist


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
    assert isinstance(config.method.params, get_strategy_class(config.method.name).Params)
