"""README's quoted figures match the committed result files they come from (each marked where quoted).

Two markers, HTML comments that a rendered README hides:

- `<!-- fig FILE KEY... [*N | /N] -->` right after a number: the number is FILE's value at KEY (JSON:
  keys and list indices; a CSV is a list of rows), optionally scaled, within the rounding of the
  printed digits. `[col=value,...]` picks the list item (row) whose fields match; a key with spaces
  is quoted. E.g. `5.2×<!-- fig results/bench_inference.json results 0 speedup -->`.
- `<!-- rows FILE -->` on the line before a Markdown table: every row of the table is a line of FILE
  (tables copied from a generated report.md).

Run alone: `python -m pytest tests/test_readme_figures.py -q`.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# a number (thousands commas allowed, a sign or Unicode minus), then up to a few characters of unit
# or emphasis (%, ×, s, MB, GiB, **), then the marker
FIGURE = re.compile(r"([-+−]?\d[\d,]*(?:\.\d+)?)[^\d<>\n]{0,8}?<!-- fig (.+?) -->")
ROWS = re.compile(r"^<!-- rows (\S+) -->$")


def figure_problems(readme: str, root: Path = ROOT) -> list[str]:
    """Every marked figure that its file does not back, as one line each (empty: all match)."""
    problems = []
    for match in FIGURE.finditer(readme):
        printed, spec = match.group(1), match.group(2)
        line = readme.count("\n", 0, match.start()) + 1
        try:
            value = _value(spec, root)
        except (OSError, KeyError, IndexError, ValueError) as error:
            problems.append(f"README.md:{line}: {printed} <- {spec}: cannot read it ({error!r})")
            continue
        number = float(printed.replace(",", "").replace("−", "-"))
        decimals = len(printed.split(".")[1]) if "." in printed else 0
        if abs(number - value) > 0.5 * 10**-decimals + 1e-9:
            problems.append(f"README.md:{line}: {printed}, but {spec} is {value!r}")
    lines = readme.splitlines()
    for i, text in enumerate(lines):
        rows = ROWS.match(text)
        if rows is None:
            continue
        source = set((root / rows.group(1)).read_text().splitlines())
        j = i + 1
        while j < len(lines) and lines[j].startswith("|"):
            if lines[j] not in source:
                problems.append(f"README.md:{j + 1}: table row not in {rows.group(1)}: {lines[j][:60]}")
            j += 1
        if j == i + 1:
            problems.append(f"README.md:{i + 1}: no table follows the rows marker")
    return problems


def _value(spec: str, root: Path) -> float:
    """The number a marker names: FILE KEY... [*N | /N]."""
    path, *keys = shlex.split(spec)
    scale = 1.0
    if keys and keys[-1][:1] in ("*", "/") and len(keys[-1]) > 1:
        token = keys.pop()
        scale = float(token[1:]) if token[0] == "*" else 1 / float(token[1:])
    file = root / path
    node = list(csv.DictReader(file.open())) if file.suffix == ".csv" else json.loads(file.read_text())
    for key in keys:
        if key.startswith("[") and key.endswith("]"):
            wanted = dict(pair.split("=", 1) for pair in key[1:-1].split(","))
            found = [item for item in node if all(str(item.get(k)) == v for k, v in wanted.items())]
            if len(found) != 1:
                raise KeyError(f"{key} matches {len(found)} items")
            node = found[0]
        elif isinstance(node, list):
            node = node[int(key)]
        else:
            node = node[key]
    return float(node) * scale


def test_every_marked_readme_figure_matches_its_result_file():
    readme = (ROOT / "README.md").read_text()
    assert len(FIGURE.findall(readme)) >= 20  # the markers are there (a renamed marker would check nothing)
    assert sum(bool(ROWS.match(line)) for line in readme.splitlines()) >= 4
    assert figure_problems(readme) == []


def test_a_drifted_or_unreadable_figure_or_row_fails(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"runs": [{"name": "a", "s": 0.426}, {"name": "b", "s": 2.2}]}))
    (tmp_path / "t.csv").write_text("variant,dice/mean mean\nfedkd,0.1749\n")
    (tmp_path / "report.md").write_text("| a | 1 |\n| b | 2 |\n")
    good = ('0.43 s<!-- fig r.json runs [name=a] s -->, 17.5 %<!-- fig t.csv [variant=fedkd] "dice/mean mean" *100 -->\n'
            "<!-- rows report.md -->\n| a | 1 |\n| b | 2 |\n")
    assert figure_problems(good, tmp_path) == []
    drifted = good.replace("0.43 s", "0.44 s").replace("| b | 2 |", "| b | 3 |")
    problems = figure_problems(drifted, tmp_path)
    assert len(problems) == 2 and "0.44, but" in problems[0] and "table row not in report.md" in problems[1]
    assert "cannot read" in figure_problems("1.0<!-- fig r.json runs [name=c] s -->", tmp_path)[0]
    assert figure_problems("0.5<!-- fig r.json runs 1 s /4.4 -->", tmp_path) == []  # 2.2 / 4.4


@pytest.mark.parametrize("printed, ok", [("9.1", True), ("9.2", False), ("+9", True), ("−9.1", False)])
def test_a_figure_matches_within_the_rounding_of_its_printed_digits(tmp_path, printed, ok):
    (tmp_path / "v.json").write_text(json.dumps({"x": 9.149}))
    assert (figure_problems(f"{printed}<!-- fig v.json x -->", tmp_path) == []) is ok
