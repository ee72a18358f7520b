"""Cell records -> results.csv, results.md (mean +- std over seeds) and a matplotlib plot.

Pure: every function takes the parsed cell.json records and returns text (or a Figure);
runner.py reads and writes the files.
"""

from __future__ import annotations

import csv
import io
import math

from onepfrac.sweep.grid import AXES, DATASETS

CSV_COLUMNS = ("cell", *AXES, "status", "best_acc1", "best_acc5", "best_epoch", "last_acc1",
               "last_acc5", "pretrain_loss", "pretrain_classes", "wall_generate_s",
               "wall_pretrain_s", "wall_finetune_s", "wall_total_s", "paper_top1", "paper_source")
GROUP_AXES = ("dataset", "delta", "sigma", "L")
# Decimals written into results.csv: % to 2, losses to 4, seconds to 1 (not 17 digits of a float)
CSV_DIGITS = {"best_acc1": 2, "best_acc5": 2, "last_acc1": 2, "last_acc5": 2, "pretrain_loss": 4,
              "wall_generate_s": 1, "wall_pretrain_s": 1, "wall_finetune_s": 1, "wall_total_s": 1}


def row(record: dict) -> dict:
    """One flat results row from one cell.json record."""
    result = record.get("result") or {}
    stages = record.get("stages") or {}
    walls = {s: stages[s].get("wall_s") for s in ("generate", "pretrain", "finetune") if s in stages}
    reference = record.get("reference") or {}
    out = {"cell": record["cell"], **{axis: record["params"].get(axis) for axis in AXES},
           "status": record.get("status", "pending"),
           **{key: result.get(key) for key in ("best_acc1", "best_acc5", "best_epoch", "last_acc1",
                                               "last_acc5", "pretrain_loss", "pretrain_classes")},
           "paper_top1": reference.get("top1"), "paper_source": reference.get("source")}
    for stage in ("generate", "pretrain", "finetune"):
        out[f"wall_{stage}_s"] = walls.get(stage)
    known = [w for w in walls.values() if w is not None]
    out["wall_total_s"] = sum(known) if known else None
    return out


def _sort_key(values: dict) -> tuple:
    def number(x):
        return (0, 0.0) if x is None else (1, x)
    dataset = values["dataset"]
    order = DATASETS.index(dataset) if dataset in DATASETS else len(DATASETS)
    # scratch first: it is the baseline every other row is read against
    return (0 if dataset == "scratch" else 1, order, number(values["delta"]),
            number(values["sigma"]), number(values["L"]), number(values.get("seed")))


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(rows, key=_sort_key):
        writer.writerow({k: _csv_value(k, r.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def _csv_value(column: str, value):
    if value is None:
        return ""
    if column in CSV_DIGITS and isinstance(value, float) and math.isfinite(value):
        return f"{value:.{CSV_DIGITS[column]}f}"
    return value


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std of one value is None, not 0."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(rows: list[dict]) -> list[dict]:
    """One group per (dataset, delta, sigma, L) over the complete cells (seeds averaged)."""
    groups = {}
    for r in rows:
        if r["status"] != "complete":
            continue
        groups.setdefault(tuple(r[a] for a in GROUP_AXES), []).append(r)
    summary = []
    for key, members in groups.items():
        group = dict(zip(GROUP_AXES, key))
        group["n"] = len(members)
        group["seeds"] = sorted(m["seed"] for m in members)
        for column in ("best_acc1", "last_acc1", "best_acc5", "pretrain_loss", "wall_total_s"):
            group[column] = mean_std([m[column] for m in members])
        references = [m["paper_top1"] for m in members if m["paper_top1"] is not None]
        group["paper_top1"] = references[0] if references else None
        group["paper_source"] = next((m["paper_source"] for m in members if m["paper_top1"] is not None), None)
        summary.append(group)
    return sorted(summary, key=_sort_key)


def pm(stats: tuple, digits: int = 2) -> str:
    mean, std = stats
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _axis(value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], title: str) -> str:
    """The results table; incomplete cells are listed under it, never averaged in."""
    groups = summarise(rows)
    lines = [f"# {title}", "",
             "Top-1 / top-5 are fine-tuning validation accuracies (%), mean ± sample std over the "
             "seeds (n); best = best epoch, last = final epoch. Pre-train loss is the last "
             "pre-training epoch's loss (ln L is chance level). The paper column is the paper's "
             "number for the matching setting, at the released recipe (see its source): compare "
             "trends, not values, when the scale differs.", "",
             "| dataset | delta | sigma | L | n | top-1 best | top-1 last | top-5 best | pre-train loss (ln L) | minutes/cell | paper top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    sources = []
    for g in groups:
        chance = f" ({math.log(g['L']):.2f})" if g["L"] else ""
        loss = pm(g["pretrain_loss"], 2) + chance if g["pretrain_loss"][0] is not None else "–"
        wall = g["wall_total_s"]
        minutes = pm((None if wall[0] is None else wall[0] / 60, None if wall[1] is None else wall[1] / 60), 1)
        paper = "–"
        if g["paper_top1"] is not None:
            if g["paper_source"] not in sources:
                sources.append(g["paper_source"])
            paper = f"{g['paper_top1']:g} [{sources.index(g['paper_source']) + 1}]"
        lines.append(f"| {g['dataset']} | {_axis(g['delta'])} | {_axis(g['sigma'])} | {_axis(g['L'])} "
                     f"| {g['n']} | {pm(g['best_acc1'])} | {pm(g['last_acc1'])} | {pm(g['best_acc5'])} "
                     f"| {loss} | {minutes} | {paper} |")
    if sources:
        lines += ["", *(f"[{i + 1}] {s}" for i, s in enumerate(sources))]
    pending = sorted((r for r in rows if r["status"] != "complete"), key=_sort_key)
    if pending:
        lines += ["", f"Not complete ({len(pending)} of {len(rows)} cells, not in the table): "
                  + ", ".join(f"{r['cell']} ({r['status']})" for r in pending)]
    return "\n".join(lines) + "\n"


def group_label(group: dict) -> str:
    parts = [group["dataset"]]
    for axis, short in (("delta", "δ"), ("sigma", "σ"), ("L", "L")):
        if group[axis] is not None:
            parts.append(f"{short}={_axis(group[axis])}")
    return " ".join(parts)


SEED_OFFSET = 0.22  # rows of the plot are 1 apart


def figure(rows: list[dict], title: str):
    """Best top-1 per group: each seed a dot, the mean a diamond with a ±std bar; scratch in grey
    and as a dashed line, so that every other row reads as above or below it. Needs matplotlib."""
    from onepfrac import plots

    groups = summarise(rows)
    seeds = {}
    for r in rows:
        if r["status"] == "complete" and r["best_acc1"] is not None:
            seeds.setdefault(tuple(r[a] for a in GROUP_AXES), []).append(r["best_acc1"])
    plot = plots.new_figure("the sweep's plot", 8, 1.2 + 0.4 * max(len(groups), 1))
    ax = plot.subplots()
    for y, g in enumerate(groups):
        colour = "#999999" if g["dataset"] == "scratch" else "#3a6ea5"
        values = seeds.get(tuple(g[a] for a in GROUP_AXES), [])
        # the seeds' dots just below the mean's bar, so that neither hides the other
        ax.scatter(values, [y + SEED_OFFSET] * len(values), s=14, color=colour, alpha=0.7, zorder=2)
        mean, std = g["best_acc1"]
        if mean is not None:
            ax.errorbar([mean], [y], xerr=None if std is None else [[std], [std]], fmt="D", color=colour,
                        markersize=6, capsize=4, zorder=3)
            ax.annotate(pm(g["best_acc1"]), (mean + (std or 0), y), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize="small")
    scratch = [g["best_acc1"][0] for g in groups if g["dataset"] == "scratch" and g["best_acc1"][0] is not None]
    if scratch:
        ax.axvline(scratch[0], color="#999999", linestyle="--", linewidth=1, zorder=1)
    ax.set_yticks(range(len(groups)), [f"{group_label(g)} (n={g['n']})" for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)  # the table's order, top to bottom
    ax.set_xlim(0, 100)
    ax.set_xlabel("fine-tuning top-1 (%), best epoch: seeds (dots), mean ± std (diamond)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if not groups:
        ax.text(50, 0, "no complete cell yet", ha="center", va="center", color="gray")
    return plot
