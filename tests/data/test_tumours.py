"""Tumours "where present": vocabulary, phantom tumours inside their hosts, partial tumour labels."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from fedray.config import SiteConfig, load_config
from fedray.data import phantom
from fedray.data.federation import _fingerprint, prepare_hospitals
from fedray.data.phantom import (
    TUMOUR_PREVALENCE,
    PhantomSpec,
    ScannerProfile,
    generate_case,
    write_site,
    write_test_set,
)
from fedray.data.sites import read_site_cases
from fedray.data.validation import check_cases
from fedray.errors import ConfigError
from fedray.organs import ORGANS, STRUCTURES, TUMOUR_HOSTS, TUMOURS, organ_label

SMALL = PhantomSpec(shape=(48, 48, 32), spacing=(8.0, 6.667, 7.5))
QUIET = ScannerProfile(noise_sigma=0.0)


def case_rng(index: int, seed: int = 3, site_index: int = 0) -> np.random.Generator:
    """The stream write_site uses for case `index` of site `site_index`."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, site_index], spawn_key=(phantom._ANATOMY_KEY, index))
    )


def site_labels(folder) -> list[np.ndarray]:
    meta = json.loads((folder / "dataset.json").read_text())
    return [np.asanyarray(nib.load(folder / e["label"]).dataobj) for e in meta["training"]]


def test_vocabulary_keeps_organ_values_and_numbers_tumours_after_them():
    assert [organ_label(o) for o in ORGANS] == list(range(1, 8))
    assert [organ_label(t) for t in TUMOURS] == [8, 9, 10]
    assert STRUCTURES == ORGANS + TUMOURS and len(set(STRUCTURES)) == len(STRUCTURES)
    assert set(TUMOUR_HOSTS) == set(TUMOURS)
    assert all(host in ORGANS for hosts in TUMOUR_HOSTS.values() for host in hosts)


def test_without_tumours_the_case_is_unchanged():
    for index in range(3):
        image, label = generate_case(case_rng(index), SMALL, ScannerProfile())
        same_image, same_label = generate_case(case_rng(index), SMALL, ScannerProfile(), tumours=())
        assert np.array_equal(image, same_image) and np.array_equal(label, same_label)
        assert label.max() <= len(ORGANS)


def test_without_tumours_cached_phantom_keys_are_unchanged():
    from fedray.data.phantom import GENERATOR_VERSION

    def before(spec, seed, index, organs, cases):  # the key as computed before tumours existed (same generator)
        text = json.dumps([GENERATOR_VERSION, repr(spec), seed, index, list(organs), cases])
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    for args in ((PhantomSpec(), 0, 3, ("liver",), 4), (SMALL, 2, -1, (), 8)):
        assert _fingerprint(*args) == before(*args)
        assert _fingerprint(*args, ("liver_tumour",)) != before(*args)


def test_default_site_and_test_set_manifests_do_not_mention_tumours(tmp_path):
    site = write_site(tmp_path / "s", ["liver"], 1, seed=0, site_index=0, spec=SMALL)
    test = write_test_set(tmp_path / "t", 1, seed=0, spec=SMALL)
    for folder in (site, test):
        assert "tumours" not in json.loads((folder / "dataset.json").read_text())["fedray"]
    assert site_labels(test)[0].max() == len(ORGANS)


def test_tumours_lie_inside_their_host_and_change_nothing_else():
    present = {t: 0 for t in TUMOURS}
    gaps = {t: [] for t in TUMOURS}
    n = 40
    for index in range(n):
        image, plain = generate_case(case_rng(index), SMALL, QUIET)
        with_image, label = generate_case(case_rng(index), SMALL, QUIET, tumours=TUMOURS)
        changed = label != plain
        assert np.array_equal(image[~changed], with_image[~changed])  # the rest of the case as before
        assert set(np.unique(label[changed])) <= {organ_label(t) for t in TUMOURS}
        for tumour in TUMOURS:
            voxels = label == organ_label(tumour)
            if not voxels.any():
                continue
            present[tumour] += 1
            hosts = set(np.unique(plain[voxels]).tolist())
            assert len(hosts) == 1 and hosts <= {organ_label(h) for h in TUMOUR_HOSTS[tumour]}
            host = hosts.pop()
            assert (label == host).any()  # the host keeps voxels around its tumour
            gaps[tumour].append(float(with_image[label == host].mean() - with_image[voxels].mean()))
    for tumour in TUMOURS:
        assert 0.45 <= present[tumour] / n <= 0.85, (tumour, present[tumour])
        assert 30 <= np.mean(gaps[tumour]) <= 70, (tumour, gaps[tumour])  # hypodense, ~40-60 HU darker
    assert TUMOUR_PREVALENCE == 0.65


def test_a_tumour_does_not_depend_on_the_studys_other_tumours():
    for index in range(6):
        _, alone = generate_case(case_rng(index), SMALL, QUIET, tumours=["liver_tumour"])
        _, all_three = generate_case(case_rng(index), SMALL, QUIET, tumours=TUMOURS)
        liver_tumour = organ_label("liver_tumour")
        assert np.array_equal(alone == liver_tumour, all_three == liver_tumour)


def test_unknown_tumour_names_suggest_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'liver_tumour'"):
        generate_case(case_rng(0), SMALL, QUIET, tumours=["liver_tumor"])
    with pytest.raises(ConfigError, match="Did you mean 'pancreas_tumour'"):
        write_site(tmp_path / "x", ["pancreas_tumor"], 1, seed=0, site_index=0, spec=SMALL)
    with pytest.raises(ConfigError, match="images hold no such tumour"):
        write_site(tmp_path / "y", ["liver", "liver_tumour"], 1, seed=0, site_index=0, spec=SMALL, tumours=[])


def full_labels(n: int, tumours=TUMOURS, seed: int = 3, site_index: int = 0) -> list[np.ndarray]:
    """Every case's full label map, as write_site draws it (its scanner does not change labels)."""
    return [generate_case(case_rng(i, seed, site_index), SMALL, QUIET, tumours)[1] for i in range(n)]


@pytest.mark.parametrize(
    ("organs", "tumour_becomes"),
    [
        (["liver"], "liver"),  # no tumour annotations: the tumour is liver to this hospital
        (["liver", "liver_tumour"], "liver_tumour"),
        (["liver_tumour"], "liver_tumour"),
        (["spleen"], None),  # labels neither: background
    ],
)
def test_partial_tumour_labels(tmp_path, organs, tumour_becomes):
    n = 6
    folder = write_site(tmp_path / "s", organs, n, seed=3, site_index=0, spec=SMALL, tumours=["liver_tumour"])
    truth = full_labels(n, ["liver_tumour"])
    tumour = organ_label("liver_tumour")
    assert any((t == tumour).any() for t in truth)
    for written, full in zip(site_labels(folder), truth):
        expected = 0 if tumour_becomes is None else organ_label(tumour_becomes)
        assert (written[full == tumour] == expected).all()
        liver = organ_label("liver")
        assert (written[full == liver] == (liver if "liver" in organs else 0)).all()
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["fedray"]["tumours"] == ["liver_tumour"]
    assert set(meta["labels"].values()) == {"background", *organs}


def test_kidney_tumours_become_the_kidney_they_grow_in(tmp_path):
    n = 10
    folder = write_site(tmp_path / "k", ["kidney_left"], n, seed=3, site_index=0, spec=SMALL, tumours=["kidney_tumour"])
    truth = full_labels(n, ["kidney_tumour"])
    plain = full_labels(n, ())
    hosts_seen = set()
    for written, full, before in zip(site_labels(folder), truth, plain):
        voxels = full == organ_label("kidney_tumour")
        if not voxels.any():
            continue
        host = int(np.unique(before[voxels])[0])
        hosts_seen.add(host)
        expected = organ_label("kidney_left") if host == organ_label("kidney_left") else 0
        assert (written[voxels] == expected).all()
    assert hosts_seen  # some case has a kidney tumour


def test_fully_labelled_test_set_holds_every_tumour(tmp_path):
    folder = write_test_set(tmp_path / "t", 6, seed=1, spec=SMALL, tumours=TUMOURS)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["fedray"]["organs"] == list(STRUCTURES) and meta["fedray"]["tumours"] == list(TUMOURS)
    assert meta["labels"] == {"0": "background", **{str(organ_label(o)): o for o in STRUCTURES}}
    seen = set().union(*(np.unique(label).tolist() for label in site_labels(folder)))
    assert seen == set(range(len(STRUCTURES) + 1))


def test_a_site_case_without_its_tumour_is_not_bad(tmp_path):
    folder = write_site(tmp_path / "s", ["liver", "liver_tumour"], 6, seed=3, site_index=0, spec=SMALL)
    labels = site_labels(folder)
    assert any(not (label == organ_label("liver_tumour")).any() for label in labels)
    site = read_site_cases(SiteConfig(path=str(folder)))
    assert site.label_map.organs == ("liver", "liver_tumour")
    good, bad = check_cases(site.cases, ["liver", "liver_tumour"], "fail")
    assert len(good) == 6 and not bad
    # A real site's own label numbering (e.g. MSD Task03: 1 liver, 2 "cancer") maps through labels.
    mapped = read_site_cases(SiteConfig(path=str(folder), labels={1: "liver", 8: "liver_tumour"}))
    assert mapped.label_map.organs == ("liver", "liver_tumour")


def test_tumour_study_hospitals_see_their_own_labels(tmp_path):
    config = load_config(
        "configs/paper_mots7.yaml",
        [f"data.cache_dir={tmp_path}", "data.phantom.shape=[48,48,32]", "data.phantom.test_cases=2",
         "data.patch_size=[16,16,16]", "eval.roi_size=[16,16,16]",
         "data.organs=[liver,spleen,liver_tumour]",
         "federation.hospitals=[{organs: [liver, liver_tumour], cases: 3}, {organs: [liver], cases: 3},"
         " {organs: [spleen], cases: 3}]"],
    )
    hospitals, test_dir = prepare_hospitals(config)
    values = []
    for hospital in hospitals:
        folder = hospital.folders[0]
        values.append(set().union(*(np.unique(label).tolist() for label in site_labels(folder))))
    liver, spleen, tumour = (organ_label(o) for o in ("liver", "spleen", "liver_tumour"))
    assert values[0] <= {0, liver, tumour} and tumour in values[0]
    assert values[1] == {0, liver}
    assert values[2] == {0, spleen}
    test_values = set().union(*(np.unique(label).tolist() for label in site_labels(test_dir)))
    assert tumour in test_values and organ_label("kidney_tumour") not in test_values
