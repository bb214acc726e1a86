"""The launcher's actor classes: they forward every method, and launching imports no torch, MONAI or MLflow."""

from __future__ import annotations

import inspect
import subprocess
import sys

from fedray.simulation.actors import DriverActor, HospitalActor
from fedray.simulation.driver import Driver
from fedray.simulation.worker import HospitalWorker


def _public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def test_actor_classes_forward_every_public_method():
    # A method added to the Driver or HospitalWorker but not here would fail only when first called
    # on a live actor; this says so at once.
    assert _public_methods(DriverActor) == _public_methods(Driver)
    assert _public_methods(HospitalActor) == _public_methods(HospitalWorker)


def test_launching_a_study_imports_neither_torch_monai_nor_mlflow():
    code = (
        "import sys; import fedray.cli, fedray.simulation.launch, fedray.simulation.placement; "
        "loaded = [m for m in ('torch', 'monai', 'mlflow') if m in sys.modules]; print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
