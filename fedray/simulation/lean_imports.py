"""Import MONAI without the packages it pulls in for features fedray never uses."""

import importlib
import sys

# The driver and hospital actor modules call import_monai() before anything else of theirs. MONAI
# imports all of its submodules at once, and with them MLflow, Matplotlib, SciPy's signal module,
# scikit-learn and pandas when they are installed (for its MLflow handler, plotting helpers,
# ultrasound and embedding metrics, profiling and CSV datasets, which fedray never uses through
# MONAI). Hidden, the hospital actor's module imports in 1.2 s of CPU after torch instead of 3.1 s.
# So MONAI is imported here with those hidden from it (a None entry in sys.modules makes an import
# fail, and MONAI's optional_import hands out a stub instead). They stay importable afterwards: the
# driver imports MLflow (and with it pandas) to log. A process that imported MONAI earlier is left
# as it is.


def import_monai() -> None:
    """Import MONAI, unless this process has already, with the packages above hidden from it."""
    if "monai" in sys.modules:
        return
    hidden = [name for name in ("mlflow", "matplotlib", "scipy.signal", "sklearn", "pandas") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden, None))
    try:
        importlib.import_module("monai")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
