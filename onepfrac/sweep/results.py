"""Cell records -> results.csv, results.md (mean +- std over seeds) and an SVG bar chart.

Pure: every function takes the parsed cell.json records and returns text; runner.py reads and
writes the files. The SVG is written by hand because matplotlib is not a dependency.
"""

from __future__ import annotations

import csv
import io
import math
from html import escape

from onepfrac.sweep.grid import AXES, DATASETS

CSV_COLUMNS = ("cell", *AXES, "status", "best_acc1", "best_acc5", "best_epoch", "last_acc1",
               "last_acc5", "pretrain_loss", "pretrain_classes", "wall_generate_s",
               "wall_pretrain_s", "wall_finetune_s", "wall_total_s", "paper_top1", "paper_source")
GROUP_AXES = ("dataset", "delta", "sigma", "L")


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
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


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


def pm(stats: tuple, digits: int = 1) -> str:
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
        minutes = pm((None if wall[0] is None else wall[0] / 60, None if wall[1] is None else wall[1] / 60))
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


def svg(rows: list[dict], title: str) -> str:
    """Horizontal bars of the mean best top-1 per group with a ±std whisker; scratch in grey and
    as a dashed line, so that every other bar reads as above or below it."""
    groups = summarise(rows)
    bar, gap, left, width, top = 22, 8, 230, 420, 44
    height = top + len(groups) * (bar + gap) + 40
    scale = width / 100.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
           '<text x="10" y="36" fill="#555">fine-tuning top-1 (%), best epoch, mean ± std over seeds</text>']
    for tick in range(0, 101, 20):
        x = left + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle" fill="#555">{tick}</text>')
    for i, g in enumerate(groups):
        y = top + i * (bar + gap)
        mean, std = g["best_acc1"]
        colour = "#999" if g["dataset"] == "scratch" else "#3a6ea5"
        out.append(f'<text x="{left - 8}" y="{y + bar * 0.7:.1f}" text-anchor="end">'
                   f'{escape(group_label(g))} (n={g["n"]})</text>')
        if mean is None:
            continue
        out.append(f'<rect x="{left}" y="{y}" width="{mean * scale:.1f}" height="{bar}" fill="{colour}"/>')
        if std is not None:
            lo, hi = left + max(0.0, mean - std) * scale, left + min(100.0, mean + std) * scale
            mid = y + bar / 2
            out.append(f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="black"/>')
            out += [f'<line x1="{x:.1f}" y1="{y + 5}" x2="{x:.1f}" y2="{y + bar - 5}" stroke="black"/>' for x in (lo, hi)]
        out.append(f'<text x="{left + min(100.0, mean + (std or 0)) * scale + 6:.1f}" y="{y + bar * 0.7:.1f}">{pm(g["best_acc1"])}</text>')
    scratch = [g["best_acc1"][0] for g in groups if g["dataset"] == "scratch" and g["best_acc1"][0] is not None]
    if scratch:
        x = left + scratch[0] * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#999" stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
