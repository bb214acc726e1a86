"""Compare methods across seeds: mean ± std tables, paired tests, plots and a Markdown report."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from fedray.organs import STRUCTURES  # noqa: E402
from fedray.tracking.plateau import (  # noqa: E402
    last_window_median,
    rounds_to_level,
    rounds_to_plateau,
    training_diverged,
)

if TYPE_CHECKING:
    from fedray.reporting.overlay import MethodOverlays

# The plateau rule's defaults (EvalConfig); used for runs logged before rounds_to_plateau was.
PLATEAU_WINDOW = 30
PLATEAU_TOLERANCE = 0.01
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9)  # mean-Dice levels whose rounds to reach the report tabulates


@dataclass(frozen=True)
class Report:
    """Where the report's files were written."""

    markdown: Path
    summary_csv: Path
    paired_csv: Path
    plots: tuple[Path, ...]
    segmentations: Path | None = None  # the methods' segmentation panel (`overlays`), when drawn
    levels_csv: Path | None = None  # rounds each run took to reach each mean-Dice level (`rounds_to_levels`)


def variant_of(run_name: str, experiment: str) -> str:
    """Sweep cells are named <experiment>__<variant>__s<seed>[__k=v...]; other runs keep their name."""
    parts = run_name.split("__")
    return parts[1] if len(parts) >= 3 and parts[0] == experiment else run_name


def run_digests(runs: pd.DataFrame) -> list[str]:
    """Each run's config digest: its `config_digest` tag, else computed from its logged params."""
    from fedray.config import config_digest

    params = [c for c in runs.columns if c.startswith("params.")]
    tags = runs["tags.config_digest"] if "tags.config_digest" in runs.columns else pd.Series([None] * len(runs))
    digests = []
    for (_, row), tag in zip(runs.iterrows(), tags):
        if isinstance(tag, str) and tag:
            digests.append(tag)
        else:
            flat = {c.removeprefix("params."): row[c] for c in params if isinstance(row[c], str)}
            digests.append(config_digest(flat))
    return digests


def tidy_runs(runs: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """One row per run: variant, seed, config digest and the final metrics under their plain names.

    Runs are seeds of one variant only when their configs are the same but for the seed (the same
    `config_digest`); a name shared by several configs is split as `<name>@<digest>`.
    """
    names = [variant_of(n, experiment) for n in runs["tags.mlflow.runName"]]
    if "tags.study" in runs.columns:  # runs outside a sweep: grouped by study, not by their -2, -3 names
        names = [n if n != r else (s if isinstance(s, str) and s else n)
                 for n, r, s in zip(names, runs["tags.mlflow.runName"], runs["tags.study"])]
    digests = run_digests(runs)
    groups: dict[str, set[str]] = {}
    for name, digest in zip(names, digests):
        groups.setdefault(name, set()).add(digest)
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "variant": [n if len(groups[n]) == 1 else f"{n}@{d[:6]}" for n, d in zip(names, digests)],
            "seed": runs["tags.seed"].astype(int),
            "config_digest": digests,
        }
    )
    if "run_dir" in runs.columns:  # study folders name their own (fedray.reporting.run_folders)
        table["run_dir"] = runs["run_dir"].to_numpy()
    platforms = runs["tags.compute_platforms"] if "tags.compute_platforms" in runs.columns else None
    table["platforms"] = "" if platforms is None else platforms.fillna("").to_numpy()
    for column in runs.columns:
        if column.startswith("metrics."):
            table[column.removeprefix("metrics.")] = runs[column].to_numpy()
    return table.sort_values(["variant", "seed"]).reset_index(drop=True)


def plateau_round(history: pd.DataFrame, window: int = PLATEAU_WINDOW, tolerance: float = PLATEAU_TOLERANCE) -> float:
    """The plateau rule (fedray.tracking.plateau) on a run's dice/mean history; NaN if not reached."""
    ordered = history.sort_values("step")
    reached = rounds_to_plateau(ordered["step"].tolist(), ordered["value"].tolist(), window, tolerance)
    return math.nan if reached is None else float(reached)


def last_window_dice(runs: pd.DataFrame, histories: pd.DataFrame, window: int = PLATEAU_WINDOW) -> pd.Series:
    """Per run, the median of its mean-Dice evaluations over its last `window` rounds
    (fedray.tracking.plateau.last_window_median), from its history: the level it ended at."""
    dice = histories[histories["metric"] == "dice/mean"]
    levels = {rid: last_window_median(g["step"].tolist(), g["value"].tolist(), window)
              for rid, g in dice.sort_values("step").groupby("run_id")}
    return runs["run_id"].map(levels).astype(float)


def rounds_to_levels(
    runs: pd.DataFrame, histories: pd.DataFrame, levels: tuple[float, ...] = LEVELS, window: int = PLATEAU_WINDOW
) -> pd.DataFrame:
    """Per run (variant, seed), the first round at which its last-`window`-rounds median mean Dice
    reached each level (fedray.tracking.plateau.rounds_to_level; NaN where it never did): how fast
    each method gets somewhere, which the Dice it ends at does not show."""
    dice = histories[histories["metric"] == "dice/mean"].sort_values("step")
    curves = {rid: (g["step"].tolist(), g["value"].tolist()) for rid, g in dice.groupby("run_id")}
    rows = []
    for _, run in runs.iterrows():
        steps, values = curves.get(run["run_id"], ([], []))
        reached = {level: rounds_to_level(steps, values, window, level) for level in levels}
        rows.append({"variant": run["variant"], "seed": run["seed"],
                     **{f"{100 * level:g} %": math.nan if r is None else float(r) for level, r in reached.items()}})
    return pd.DataFrame(rows)


def levels_table(levels: pd.DataFrame, order: list[str]) -> str:
    """Markdown: per variant (in `order`) and level, the median over seeds of the rounds to reach it,
    over the seeds that did, with how many did."""
    columns = [c for c in levels.columns if c.endswith(" %")]
    lines = ["| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for variant in order:
        group = levels[levels["variant"] == variant]
        cells = []
        for column in columns:
            reached = group[column].dropna()
            cells.append("not reached" if reached.empty else f"{reached.median():.0f} ({len(reached)}/{len(group)})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(runs: pd.DataFrame, histories: pd.DataFrame, organs: list[str]) -> pd.DataFrame:
    """Per variant: mean and std over seeds of each organ's Dice and the mean, plus cost columns."""
    dice = histories[histories["metric"] == "dice/mean"]
    plateaus = runs["run_id"].map({rid: plateau_round(group) for rid, group in dice.groupby("run_id")})
    if "dice/mean_final" in runs:  # the run's own rule, as logged (NaN, so not logged, if never met)
        logged = runs["dice/mean_final"].notna()
        plateaus = plateaus.where(~logged, runs.get("rounds_to_plateau", pd.Series(math.nan, index=runs.index)))
    runs = runs.assign(plateau_round=plateaus, plateaued=plateaus.notna())
    losses = histories[histories["metric"] == "train/loss"].sort_values("step").groupby("run_id")["value"]
    judged = runs["run_id"].map({rid: training_diverged(list(group), PLATEAU_WINDOW) for rid, group in losses})
    logged = runs["diverged"] if "diverged" in runs else pd.Series(math.nan, index=runs.index)
    # the run's own judgement (its own plateau window) where it logged one, else judged here from its losses
    runs = runs.assign(diverged=logged.where(logged.notna(), judged).fillna(False).astype(bool))
    if "dice_last_window" not in runs:  # write_report adds it once for the summary and the paired tests
        runs = runs.assign(dice_last_window=last_window_dice(runs, histories))
    rounds = histories[histories["metric"] == "comm/bytes_down"].groupby("run_id")["step"].max()
    teachers = runs["comm/bytes_preparation"].fillna(0)
    hd95 = [f"hd95/{o}" for o in organs if f"hd95/{o}" in runs]
    runs = runs.assign(
        mb_per_round=(runs["comm/bytes_total"] - teachers) / runs["run_id"].map(rounds) / 1e6,
        rounds_trained=runs["run_id"].map(rounds),  # fewer than `rounds` where the study stopped at its plateau
        hd95_mean=runs[hd95].mean(axis=1) if hd95 else math.nan,  # over the organs the test set labels
    )
    per_volume = ["dice_per_volume/mean"] if "dice_per_volume/mean" in runs else []
    columns = ["dice/mean", "dice_last_window", *per_volume, "hd95_mean", *[f"dice/{o}" for o in organs]]
    grouped = runs.groupby("variant")
    summary = pd.DataFrame(index=grouped.size().index)
    summary["seeds"] = grouped.size()
    for column in columns:
        summary[f"{column} mean"] = grouped[column].mean()
        summary[f"{column} std"] = grouped[column].std(ddof=1)
    summary["params"] = grouped["params_total"].first()
    summary["MB/round"] = grouped["mb_per_round"].mean()
    summary["teacher MB (once)"] = grouped["comm/bytes_preparation"].mean() / 1e6
    summary["infer s/volume"] = grouped["infer/s_per_volume"].median()
    summary["plateaued"] = grouped["plateaued"].sum()
    summary["diverged"] = grouped["diverged"].sum()
    summary["rounds to plateau (median)"] = grouped["plateau_round"].median()
    summary["rounds trained (median)"] = grouped["rounds_trained"].median()
    return summary.sort_values("dice/mean mean", ascending=False)


def paired_tests(runs: pd.DataFrame, reference: str, metric: str = "dice/mean") -> pd.DataFrame:
    """Reference minus each other variant on a mean Dice (pooled `dice/mean`, or per-volume
    `dice_per_volume/mean`), paired by seed: mean, std, Wilcoxon and t p-values.

    With n paired seeds the smallest two-sided Wilcoxon p-value is 2 / 2**n (0.25 for 3 seeds), so
    the t-test is reported beside it; neither is strong evidence with a handful of seeds. "same
    platform": the pairs whose two runs trained on one compute platform throughout (equal
    `platforms`, recorded), the only ones paired bit for bit; "platform not recorded": pairs with a run
    that did not record it.
    """
    if metric not in runs:
        return pd.DataFrame()
    pivot = runs.pivot_table(index="seed", columns="variant", values=metric)
    labels = (runs.set_index(["seed", "variant"])["platforms"] if "platforms" in runs
              else pd.Series(dtype=str)).to_dict()
    rows = []
    for variant in pivot.columns:
        if variant == reference or reference not in pivot.columns:
            continue
        pairs = pivot[[reference, variant]].dropna()
        diff = pairs[reference] - pairs[variant]
        n = len(diff)
        wilcoxon_p = stats.wilcoxon(diff).pvalue if n >= 2 and (diff != 0).any() else math.nan
        t_p = stats.ttest_rel(pairs[reference], pairs[variant]).pvalue if n >= 2 else math.nan
        platforms = [(labels.get((seed, reference), ""), labels.get((seed, variant), "")) for seed in pairs.index]
        unknown = sum(1 for a, b in platforms if not a or not b or "not recorded" in a + b)
        rows.append(
            {
                "comparison": f"{reference} - {variant}",
                "paired seeds": n,
                "mean diff (Dice points)": 100 * diff.mean(),
                "std diff": 100 * diff.std(ddof=1) if n >= 2 else math.nan,
                "reference wins": int((diff > 0).sum()),
                "wilcoxon p": wilcoxon_p,
                "paired t p": t_p,
                "same platform": sum(1 for a, b in platforms if a and a == b and "not recorded" not in a),
                "platform not recorded": unknown,
            }
        )
    return pd.DataFrame(rows)


def config_differences(raw: pd.DataFrame, tidy: pd.DataFrame) -> pd.DataFrame:
    """The logged config keys (MLflow params) whose values differ between variants: variant x key."""
    from fedray.config import NOT_IN_DIGEST, NOT_IN_DIGEST_SECTIONS

    params = [c for c in raw.columns if c.startswith("params.")]
    table = raw.set_index("run_id")[params].loc[tidy["run_id"]]
    table.index = tidy["variant"].to_numpy()
    table = table.groupby(level=0).first()
    keep = [c for c in params
            if table[c].nunique(dropna=False) > 1
            and c.removeprefix("params.") not in NOT_IN_DIGEST
            and not c.removeprefix("params.").startswith(NOT_IN_DIGEST_SECTIONS)]
    return table[keep].rename(columns=lambda c: c.removeprefix("params."))


def write_report(
    runs: pd.DataFrame,
    histories: pd.DataFrame,
    experiment: str,
    out_dir: Path,
    reference: str,
    overlays: MethodOverlays | None = None,
    differences: pd.DataFrame | None = None,
) -> Report:
    """Write report.md, summary.csv, paired.csv, levels.csv and PNG plots under `out_dir`.

    `overlays`: `fedray.reporting.overlay.method_overlays(runs, out_dir)`, the methods' segmentations
    of one test volume, shown (with what it left out) in a Segmentations section.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    organs = [o for o in STRUCTURES if f"dice/{o}" in runs.columns]
    runs = runs.assign(dice_last_window=last_window_dice(runs, histories))
    summary = summarise(runs, histories, organs)
    paired = paired_tests(runs, reference)
    paired_per_volume = paired_tests(runs, reference, "dice_per_volume/mean")
    paired_last_window = paired_tests(runs, reference, "dice_last_window")
    levels = rounds_to_levels(runs, histories)
    summary_csv, paired_csv, levels_csv = out_dir / "summary.csv", out_dir / "paired.csv", out_dir / "levels.csv"
    summary.to_csv(summary_csv)
    levels.to_csv(levels_csv, index=False)
    pd.concat([paired.assign(dice="pooled"), paired_per_volume.assign(dice="per volume"),
               paired_last_window.assign(dice="last-window median")]).to_csv(paired_csv, index=False)
    plots = (
        _plot_organs(summary, organs, out_dir / "dice_per_organ.png"),
        _plot_curves(runs, histories, out_dir / "dice_vs_round.png"),
        _plot_curves_by_seed(runs, histories, out_dir / "dice_vs_round_by_seed.png"),
        _plot_pareto(runs, histories, out_dir / "dice_vs_communication.png"),
        _plot_costs(summary, out_dir / "inference_and_parameters.png"),
    )
    plots = tuple(p for p in plots if p is not None)
    markdown = out_dir / "report.md"
    notes = ""
    if reference not in set(runs["variant"]):
        notes += (f"\n**The reference variant `{reference}` is not among these runs** "
                  f"({', '.join(sorted(set(runs['variant'])))}), so there is no paired comparison; "
                  "choose one with `fedray report --reference VARIANT`.\n")
    if differences is not None and not differences.empty:
        notes += ("\n## How the variants' configs differ\n\n(logged config keys that differ; seeds of one "
                  "variant share everything but the seed)\n\n" + _markdown_table(differences) + "\n")
    markdown.write_text(_markdown(experiment, summary, paired, paired_per_volume, paired_last_window, organs, reference, plots)
                        + _levels_section(levels, list(summary.index)) + _time_section(runs, list(summary.index))
                        + _platforms_section(runs) + notes
                        + (_segmentations(overlays, out_dir) if overlays is not None else ""))
    return Report(markdown, summary_csv, paired_csv, plots, overlays.png if overlays is not None else None, levels_csv)


def study_times(runs: pd.DataFrame, order: list[str]) -> tuple[str, float]:
    """Markdown table of each variant's study wall time (minutes: median, min-max over seeds, sum) and
    the hours of all the runs together; NaN hours where no run logged its time (`wall_s`)."""
    if "wall_s" not in runs or runs["wall_s"].isna().all():
        return "", math.nan
    minutes = (runs["wall_s"] / 60).groupby(runs["variant"])
    lines = ["| method | seeds | minutes a study (median) | min-max | minutes in all |", "|---|---|---|---|---|"]
    for variant in [v for v in order if v in minutes.groups]:
        m = minutes.get_group(variant).dropna()
        lines.append(f"| {variant} | {len(m)} | {m.median():.1f} | {m.min():.1f}-{m.max():.1f} | {m.sum():.0f} |")
    return "\n".join(lines), float(runs["wall_s"].sum() / 3600)


def platforms_table(runs: pd.DataFrame) -> str:
    """Markdown table of the compute platforms the runs trained on (`platforms`, provenance.platforms_label)
    and which runs each holds, "" where no run recorded one."""
    if "platforms" not in runs or not (runs["platforms"] != "").any():
        return ""
    lines = ["| compute platforms | studies | which |", "|---|---|---|"]
    labels = runs["platforms"].replace("", "not recorded")
    for label, group in runs.groupby(labels, sort=False):
        which = ", ".join(f"{v} s{s}" for v, s in sorted(zip(group["variant"], group["seed"])))
        lines.append(f"| {label} | {len(group)} | {which} |")
    return "\n".join(lines)


def _platforms_section(runs: pd.DataFrame) -> str:
    table = platforms_table(runs)
    if not table:
        return ""
    return ("\n## Compute platforms\n\nWhere each study's hospital actors trained, from the round each session began "
            "at (summary.json `platforms`). Runs of one seed start from the same weights, data and patches, "
            "but they are exactly paired only on one platform: other CPU kernels give other round-off, "
            "and a long study's curve drifts apart from it.\n\n" + table + "\n")


def _time_section(runs: pd.DataFrame, order: list[str]) -> str:
    table, hours = study_times(runs, order)
    if not table:
        return ""
    return (f"\n## Time\n\nEach study's own wall time (summary.json `wall_s`: preparation, rounds and evaluation "
            f"of every session it ran in, summed; not Ray's start or the pauses between sessions). These "
            f"{len(runs)} studies took {hours:.1f} h in all.\n\n" + table + "\n")


def _levels_section(levels: pd.DataFrame, order: list[str]) -> str:
    return (f"\n## Rounds to a level\n\nThe first round at which the median of a run's mean-Dice evaluations over "
            f"its last {PLATEAU_WINDOW} rounds, at least three of them, reached each level (the plateau rule's window, "
            "so one lucky evaluation does not count; on a rising curve the median lags the curve by about half a "
            "window): the median over the seeds that reached it, and how many did (levels.csv: every run).\n\n"
            + levels_table(levels, order) + "\n")


def _markdown_table(table: pd.DataFrame) -> str:
    head = ["variant", *table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i), *(str(v) for v in row)]) + " |" for i, row in zip(table.index, table.to_numpy())]
    return "\n".join(lines)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if not math.isnan(std) else f"{100 * mean:.1f}"


def dice_table(summary: pd.DataFrame, organs: list[str]) -> str:
    """Markdown table: Dice % mean ± std per organ and method, with the cost columns."""
    per_volume = "dice_per_volume/mean mean" in summary
    head = ["method", "seeds", "mean Dice %", "last-window Dice %", *(["per-volume Dice %"] if per_volume else []), "HD95 mm", *organs,
            "params", "MB/round", "infer s/vol", "plateaued", "diverged", "rounds to plateau", "rounds trained"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in summary.iterrows():
        hd95 = row["hd95_mean mean"]
        cells = [
            str(variant),
            str(int(row["seeds"])),
            _pm(row["dice/mean mean"], row["dice/mean std"]),
            _pm(row["dice_last_window mean"], row["dice_last_window std"]),
            *([_pm(row["dice_per_volume/mean mean"], row["dice_per_volume/mean std"])] if per_volume else []),
            "n/a" if math.isnan(hd95) else (f"{hd95:.1f} ± {row['hd95_mean std']:.1f}"
                                            if not math.isnan(row["hd95_mean std"]) else f"{hd95:.1f}"),
            *[_pm(row[f"dice/{o} mean"], row[f"dice/{o} std"]) for o in organs],
            f"{int(row['params']):,}",
            f"{row['MB/round']:.2f}",
            f"{row['infer s/volume']:.3f}",
            f"{int(row['plateaued'])}/{int(row['seeds'])}",
            f"{int(row['diverged'])}/{int(row['seeds'])}",
            "not reached" if math.isnan(row["rounds to plateau (median)"]) else f"{row['rounds to plateau (median)']:.0f}",
            f"{row['rounds trained (median)']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired_table(paired: pd.DataFrame) -> str:
    lines = ["| comparison | seeds | mean diff (points) | std | reference wins | Wilcoxon p | paired t p "
             "| same platform |", "|---|---|---|---|---|---|---|---|"]
    for _, r in paired.iterrows():
        same = f"{r['same platform']}/{r['paired seeds']}" + (
            f" ({r['platform not recorded']} not recorded)" if r["platform not recorded"] else "")
        lines.append(
            f"| {r['comparison']} | {r['paired seeds']} | {r['mean diff (Dice points)']:+.1f} | "
            f"{r['std diff']:.1f} | {r['reference wins']}/{r['paired seeds']} | {r['wilcoxon p']:.3f} "
            f"| {r['paired t p']:.3f} | {same} |"
        )
    return "\n".join(lines)


def _markdown(experiment, summary, paired, paired_per_volume, paired_last_window, organs, reference, plots) -> str:
    per_volume = "" if paired_per_volume.empty else (
        "\n\nThe same on per-volume Dice (each test volume's Dice, averaged over volumes):\n\n"
        + _paired_table(paired_per_volume))
    if not paired_last_window.empty:
        per_volume += ("\n\nThe same on the last-window Dice (the median of the pooled mean-Dice evaluations "
                       f"of each run's last {PLATEAU_WINDOW} rounds):\n\n" + _paired_table(paired_last_window))
    images = "\n\n".join(f"![{p.stem}]({p.name})" for p in plots)
    return f"""# Method comparison: {experiment}

Dice on the fully-labelled held-out set, final global model; mean ± std over seeds. Mean Dice %
and the organ columns are pooled Dice (TP/FP/FN summed over the test volumes); last-window Dice is
the median of the pooled mean-Dice evaluations of the run's last {PLATEAU_WINDOW} rounds (the level it
ended at, steadier than one evaluation where the curve swings, and not pulled by one collapsed one); per-volume Dice is each
volume's Dice averaged over volumes (as nnU-Net and the paper report); HD95 mm: the 95th-percentile
Hausdorff distance averaged over organs, an organ in the reference but not predicted counting as
the volume's diagonal. MB/round: bytes all hospitals downloaded and uploaded per round (teachers
excluded; they are sent once). Plateaued: seeds whose run reached the plateau rule (the median of
the mean-Dice evaluations in the last `eval.plateau_window` rounds, default {PLATEAU_WINDOW}, less than
`eval.plateau_tolerance`, default {100 * PLATEAU_TOLERANCE:.0f} Dice point, above the median of the window before,
and not before `eval.plateau_min_rounds`; each run's rule is in its summary.json as `plateau_rule`);
diverged: seeds whose training loss ended above where it started (the median of its last {PLATEAU_WINDOW}
rounds above that of its first 5), a collapse the plateau rule reads as a level; rounds to plateau: the round the rule was first met (median over the seeds that reached it);
rounds trained: the rounds run (fewer than the cap where `eval.stop_at_plateau` ended the study there).

{dice_table(summary, organs)}

## Paired comparison with {reference} (mean Dice, paired by seed)

Seeds pair runs that share initial weights, data and patches. With 3 seeds the smallest possible
two-sided Wilcoxon p-value is 0.25, so read the spread of the differences, not the p-value alone.
Same platform: the pairs whose two runs trained on one compute platform throughout, the only ones
paired bit for bit (see "Compute platforms").

{_paired_table(paired)}{per_volume}

## Plots

{images}
"""


def _segmentations(overlays: MethodOverlays, out_dir: Path) -> str:
    lines = ["", "## Segmentations", ""]
    if overlays.png is not None:
        lines += [
            f"Test case {overlays.case} segmented by each method's seed-{overlays.seed} model (best mean Dice first),",
            "on the axial and coronal slices through the most reference foreground. Solid lines: reference;",
            "filled, dashed edge: prediction. A line without fill is missed, a fill without line is false positive.",
            "",
            f"![segmentations]({Path(os.path.relpath(overlays.png, out_dir)).as_posix()})",
        ]
    else:
        lines.append("No segmentation panel could be drawn.")
    if overlays.notes:
        lines += ["", *[f"- {note}" for note in overlays.notes]]
    return "\n".join(lines) + "\n"


def _plot_organs(summary: pd.DataFrame, organs: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(summary))
    x = np.arange(len(organs) + 1)
    for i, (variant, row) in enumerate(summary.iterrows()):
        means = [row["dice/mean mean"], *[row[f"dice/{o} mean"] for o in organs]]
        stds = [row["dice/mean std"], *[row[f"dice/{o} std"] for o in organs]]
        ax.bar(x + i * width, 100 * np.array(means), width, yerr=100 * np.nan_to_num(stds), label=variant, capsize=2)
    ax.set_xticks(x + width * (len(summary) - 1) / 2, ["mean", *organs], rotation=20)
    ax.set_ylabel("Dice (%)")
    ax.set_title("Dice per organ, mean ± std over seeds")
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, path)


def variant_styles(variants: list[str]) -> dict[str, dict]:
    """A colour and line style per variant, the same in every plot: ten colours, then the next line
    style (matplotlib's cycle repeats its ten colours, and the phantom sweep has thirteen variants)."""
    colours = plt.get_cmap("tab10").colors
    dashes = ("-", "--", ":", "-.")
    return {v: {"color": colours[i % 10], "linestyle": dashes[(i // 10) % 4]} for i, v in enumerate(sorted(variants))}


def _plot_curves(runs: pd.DataFrame, histories: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    dice = histories[histories["metric"] == "dice/mean"].merge(runs[["run_id", "variant"]], on="run_id")
    styles = variant_styles(list(runs["variant"].unique()))
    for variant, group in dice.groupby("variant"):
        curve = group.groupby("step")["value"].agg(["mean", "min", "max"])
        ax.plot(curve.index, 100 * curve["mean"], label=variant, **styles[variant])
        ax.fill_between(curve.index, 100 * curve["min"], 100 * curve["max"], alpha=0.15, color=styles[variant]["color"])
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean Dice (%)")
    ax.set_title("Mean Dice against round (line: mean over seeds; band: min-max)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def seeded_variants(runs: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The variants run at more than one seed (the paired comparison's), and the seeds any of them ran."""
    counts = runs.groupby("variant")["seed"].nunique()
    variants = sorted(counts[counts > 1].index)
    return variants, sorted(runs[runs["variant"].isin(variants)]["seed"].unique().tolist())


def _plot_curves_by_seed(runs: pd.DataFrame, histories: pd.DataFrame, path: Path) -> Path | None:
    """One panel per seed with each multi-seed variant's own curve: paired runs side by side, where
    the mean over seeds of `_plot_curves` hides a run that never took off. None with no such variant."""
    variants, seeds = seeded_variants(runs)
    if not variants:
        return None
    styles = variant_styles(list(runs["variant"].unique()))
    dice = histories[histories["metric"] == "dice/mean"].merge(runs[["run_id", "variant", "seed"]], on="run_id")
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.2 * len(seeds) + 1.5, 4), sharex=True, sharey=True, squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        for variant in variants:
            curve = dice[(dice["variant"] == variant) & (dice["seed"] == seed)].dropna(subset=["value"])
            if not curve.empty:
                curve = curve.sort_values("step")
                ax.plot(curve["step"], 100 * curve["value"], label=variant, lw=1.2, **styles[variant])
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("mean Dice (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a variant missing at seed 0 still gets its legend entry
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle("Mean Dice against round, each seed's runs (same initial weights, data and patches)")
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_pareto(runs: pd.DataFrame, histories: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    wide = histories.pivot_table(index=["run_id", "step"], columns="metric", values="value").reset_index()
    wide = wide.dropna(subset=["dice/mean"]).merge(runs[["run_id", "variant"]], on="run_id")
    points = wide.groupby(["variant", "step"])[["comm/bytes_total", "dice/mean"]].mean().reset_index()
    styles = variant_styles(list(runs["variant"].unique()))
    for variant, group in points.groupby("variant"):
        ax.plot(group["comm/bytes_total"] / 1e9, 100 * group["dice/mean"], marker=".", label=variant, **styles[variant])
    ordered = points.sort_values("comm/bytes_total")
    front = ordered[ordered["dice/mean"] >= ordered["dice/mean"].cummax()]
    ax.step(front["comm/bytes_total"] / 1e9, 100 * front["dice/mean"], where="post", color="black", lw=2,
            label="Pareto front")
    ax.set_xlabel("cumulative communication (GB, all hospitals)")
    ax.set_ylabel("mean Dice (%)")
    ax.set_title("Dice against communication")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_costs(summary: pd.DataFrame, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(summary.index)
    left.barh(names, summary["infer s/volume"])
    left.set_xlabel("inference (s per volume, median over seeds)")
    left.set_title("Inference time")
    right.barh(names, summary["params"] / 1e3)
    right.set_xlabel("parameters (thousands)")
    right.set_title("Model size")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
