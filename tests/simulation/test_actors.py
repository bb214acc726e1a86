"""The launcher's actor classes: they forward every method, and launching imports no torch, MONAI or MLflow."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from fedray.simulation.actors import HospitalActor
from fedray.simulation.launch import DriverActor
from fedray.simulation.driver import Driver
from fedray.simulation.worker import HospitalWorker


def _public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def _signature(function) -> inspect.Signature:
    # Ray adds a keyword-only _ray_trace_ctx to the methods of a class it has made an actor of.
    signature = inspect.signature(function)
    return signature.replace(parameters=[p for p in signature.parameters.values() if p.name != "_ray_trace_ctx"])


@pytest.mark.parametrize(("actor", "real"), [(DriverActor, Driver), (HospitalActor, HospitalWorker)])
def test_actor_classes_forward_every_public_method_with_its_signature(actor, real):
    # Ray checks a call's arguments against the actor class's signatures where the call is made; a
    # forwarder with a looser or stale signature would let a wrong call fail inside the actor instead,
    # where the driver would take it for a failed hospital.
    assert _public_methods(actor) == _public_methods(real)
    for name in ["__init__", *_public_methods(real)]:
        assert _signature(getattr(actor, name)) == _signature(getattr(real, name)), name


def test_launching_a_study_imports_neither_torch_monai_nor_mlflow():
    code = (
        "import sys; import fedray.cli, fedray.simulation.launch, fedray.simulation.placement; "
        "loaded = [m for m in ('torch', 'monai', 'mlflow') if m in sys.modules]; print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
