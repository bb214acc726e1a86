"""Simulation on Ray: hospital actors, the driver's round loop, and starting/joining a Ray cluster."""

import importlib
import sys

# Every process of a study (the launcher, the driver actor, each hospital actor) imports this package
# before anything else of fedray's. MONAI imports all of its submodules at once, and with them MLflow,
# Matplotlib, SciPy's signal module and scikit-learn when they are installed (for its MLflow handler,
# plotting helpers, ultrasound and embedding metrics, which fedray never uses through MONAI): about
# 2.5 s of CPU in every hospital actor, which never logs or plots, about half its start-up. So MONAI is
# imported here with those hidden from it (a None entry in sys.modules makes an import fail, and
# MONAI's optional_import hands out a stub instead). They stay importable afterwards: the driver
# imports MLflow itself to log. A process that imported MONAI earlier is left as it is.
if "monai" not in sys.modules:
    _hidden = [name for name in ("mlflow", "matplotlib", "scipy.signal", "sklearn") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(_hidden, None))
    try:
        importlib.import_module("monai")
    finally:
        for _name in _hidden:
            if sys.modules.get(_name, False) is None:
                del sys.modules[_name]
