"""Study processes import MONAI without the packages it would pull in for features fedray never uses."""

from __future__ import annotations

import subprocess
import sys

HIDDEN = ("mlflow", "matplotlib", "scipy.signal", "sklearn", "pandas")


def test_actor_modules_import_monai_without_mlflow_matplotlib_scipy_signal_sklearn_or_pandas():
    code = (
        # In an actor, Ray unpickles the config and hospitals before the worker module is imported.
        "import sys; import fedray.config, fedray.data.federation; import fedray.simulation.worker; "
        f"loaded = [m for m in {HIDDEN!r} if m in sys.modules]; assert not loaded, loaded; "
        "import mlflow, matplotlib, scipy.signal, sklearn, pandas; import monai.handlers; print('importable')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "importable"  # hidden only while MONAI imported, not afterwards
