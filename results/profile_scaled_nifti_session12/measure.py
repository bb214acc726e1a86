"""Peak RSS of preprocessing one clinical-size case (lean chain), int16 vs scaled int16 (slope/intercept)."""
import json, resource, sys
from pathlib import Path
import numpy as np

def make(folder: Path, kind: str, shape=(512, 512, 112)):
    import nibabel as nib
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, size=shape, dtype=np.int16)
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    if kind == "int16":
        img = nib.Nifti1Image(hu, aff); img.header.set_data_dtype(np.int16)
    else:  # stored raw = hu + 1024 as int16 with slope 1 intercept -1024 (or slope 0.5)
        slope, inter = (1.0, -1024.0) if kind == "scaled" else (0.5, -1024.0)
        raw = np.round((hu - inter) / slope).astype(np.int16)
        img = nib.Nifti1Image(raw, aff); img.header.set_data_dtype(np.int16)
        img.header.set_slope_inter(slope, inter)
    nib.save(img, folder / "ct.nii.gz") if False else nib.save(img, folder / "ct.nii")
    lab = np.zeros(shape, np.uint8); lab[100:200, 100:200, 20:60] = 1
    nib.save(nib.Nifti1Image(lab, aff), folder / "seg.nii")

def run(folder: Path, spacing):
    from fedray.config import PreprocessConfig
    from fedray.data.datasets import load_cases
    from fedray.data.sites import LabelMap, SiteCase
    case = SiteCase("s", folder, "c", folder / "ct.nii", folder / "seg.nii", LabelMap(((1, "liver"),), (0, 1), ("liver",)))
    import torch  # imports first, so the baseline holds them
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = load_cases([case], ["liver"], (-200.0, 300.0), PreprocessConfig(spacing=spacing, crop_foreground=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    img = out[0]["image"]
    print(json.dumps({"peak_mb_over_base": (peak - base) / 1024, "dtype": str(img.dtype), "shape": list(img.shape),
                      "sum": float(np.asarray(img, dtype=np.float64).sum())}))

if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), sys.argv[3])
    else:
        spacing = None if sys.argv[3] == "none" else tuple(float(x) for x in sys.argv[3].split(","))
        run(Path(sys.argv[2]), spacing)
