"""Read a real data site (MSD folder or CSV file) into its cases and label map, and split it into hospitals."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedray.config import SiteConfig
from fedray.data.msd import read_site
from fedray.errors import DataError
from fedray.organs import STRUCTURES


@dataclass(frozen=True)
class LabelMap:
    """How one site's label values become global organs, and which organs its annotators drew.

    Attributes:
        names: label value -> global organ, for the values that are trained on.
        values: every value the site's label files may hold (0 included); others are bad input.
        organs: global organs the site annotates, in the study vocabulary's order.
    """

    names: tuple[tuple[int, str], ...]
    values: tuple[int, ...]
    organs: tuple[str, ...]

    def values_of(self, organ: str) -> tuple[int, ...]:
        """The site's label values that mean `organ`."""
        return tuple(value for value, name in self.names if name == organ)


@dataclass(frozen=True)
class SiteCase:
    """One image/label pair of a site, carrying the site's label map (so hospitals can mix sites)."""

    site: str
    source: Path  # the site's dataset.json or CSV file
    case_id: str
    image: Path
    label: Path
    label_map: LabelMap


@dataclass(frozen=True)
class Site:
    """A site as listed on disk (files not yet checked): its name, manifest file and cases."""

    name: str
    source: Path
    cases: tuple[SiteCase, ...]
    label_map: LabelMap


def label_lookup(label_names: dict[int, str], organs: Sequence[str]) -> np.ndarray:
    """Table mapping a site's label values to study indices (organ k -> k+1; others -> 0)."""
    table = np.zeros(max([0, *label_names]) + 1, dtype=np.int64)
    for value, name in label_names.items():
        if name in organs:
            table[value] = organs.index(name) + 1
    return table


def site_table(label_map: LabelMap, organs: Sequence[str]) -> np.ndarray:
    """`label_lookup` of a site: values it knows but does not train on map to background, like unlabelled organs."""
    return label_lookup({**dict.fromkeys(label_map.values, ""), **dict(label_map.names)}, organs)


def read_site_cases(site: SiteConfig, require_files: bool = False) -> Site:
    """List a site's cases and build its label map; files are checked later (fedray.data.validation).

    Raises:
        DataError: no folder or CSV, a malformed dataset.json or CSV, no cases, repeated case ids,
            or declared organs that no label value means.
    """
    path = Path(site.path)
    if site.format == "csv":
        name, source, pairs, file_names, file_values = path.stem, path, _read_csv(path), {}, frozenset()
    else:
        msd = read_site(path, require_files=require_files)
        name, source = path.name, path / "dataset.json"
        pairs = [(c.case_id, c.image, c.label) for c in msd.cases]
        file_names, file_values = msd.label_names, msd.label_values
    name = site.name or name
    if site.labels is not None:  # replaces dataset.json's names: values it leaves out are not trained on
        names = {value: organ for value, organ in site.labels.items() if organ is not None}
    else:
        names = {value: organ for value, organ in file_names.items() if organ in STRUCTURES}
    named = set(names.values())
    organs = tuple(o for o in STRUCTURES if o in (site.organs if site.organs is not None else named))
    unmapped = [o for o in organs if o not in named]
    if unmapped:
        raise DataError(
            f"Site '{name}' ({source}) declares {', '.join(unmapped)}, but its label map has no value for "
            f"it (label map: {names}). Add the value to the site's labels, or remove the organ from organs."
        )
    label_map = LabelMap(
        names=tuple(sorted((v, o) for v, o in names.items() if o in organs)),  # undeclared: background
        values=tuple(sorted({0, *file_values, *(site.labels or {})})),
        organs=organs,
    )
    ids = [case_id for case_id, _, _ in pairs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(
            f"'{source}' lists case {', '.join(repeated)} more than once; list each case once."
        )
    cases = tuple(SiteCase(name, source, case_id, image, label, label_map) for case_id, image, label in pairs)
    return Site(name=name, source=source, cases=cases, label_map=label_map)


def split_cases(cases: tuple[SiteCase, ...], k: int) -> list[tuple[SiteCase, ...]]:
    """Deal a site's cases into k disjoint, covering groups whose sizes differ by at most one.

    Cases are ordered by a hash of their id first, so the split is the same on every machine and
    run, and does not follow the listing order (often acquisition date or scanner).
    """
    if k > len(cases):
        site = cases[0].site if cases else "?"
        raise DataError(
            f"Site '{site}' has {len(cases)} usable case(s), too few to split into {k} hospitals. "
            "Lower the site's split, or add cases."
        )
    if k == 1:
        return [cases]  # one hospital keeps the listing order
    ordered = sorted(cases, key=lambda c: (hashlib.sha256(c.case_id.encode()).hexdigest(), c.case_id))
    return [tuple(ordered[j::k]) for j in range(k)]


def _read_csv(path: Path) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) rows of a CSV site; paths are relative to the CSV file's folder."""
    import pandas as pd  # here, not at the top: hospital actors unpickle SiteCase and never read a CSV

    if not path.is_file():
        raise DataError(f"Site CSV file '{path}' does not exist.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"'{path}' is not a readable CSV file ({type(error).__name__}: {error}).") from None
    table.columns = [str(c).strip() for c in table.columns]  # "image, label" is a common way to write it
    missing = [c for c in ("image", "label") if c not in table.columns]
    if missing:
        raise DataError(
            f"'{path}' has no column {', '.join(missing)}. A CSV site needs columns image,label "
            f"(paths relative to the CSV file); it has: {', '.join(map(str, table.columns))}."
        )
    rows = []
    for number, (image, label) in enumerate(zip(table["image"], table["label"]), start=2):  # line 1: header
        if not image.strip() or not label.strip():
            raise DataError(f"'{path}' line {number}: image and label must both be given.")
        image_path = path.parent / image.strip()
        rows.append((_case_id(image.strip()), image_path, path.parent / label.strip()))
    if not rows:
        raise DataError(f"'{path}' lists no cases.")
    return rows


def _case_id(relative: str) -> str:
    """'patient1/ct.nii.gz' -> 'patient1/ct': the path names a case even where file names repeat."""
    for suffix in (".nii.gz", ".nii"):
        if relative.endswith(suffix):
            return relative[: -len(suffix)]
    return relative
