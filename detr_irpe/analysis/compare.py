"""Reading an ablation's answer from what its runs wrote: a table per variant (mean and standard
deviation over seeds), the seed-paired differences to the baseline with 95% intervals and a
verdict (detr_irpe.analysis.stats), and plots. Only run folders are read (``log.jsonl``,
``run_info.json``, ``variant.json``), so runs trained elsewhere compare the same way."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.names import AP_NAMES
from ..engine.run_folder import RunFolder
from .figures import new_figure, save_png
from .stats import MAX_SEEDS, Interval, defined, paired_difference, seeds_needed, t_interval

METRICS = AP_NAMES
#: the metrics whose seed-paired differences get an interval and a verdict
PAIRED_METRICS = ("AP", "AP50", "AP75")
#: the interval half-width (AP as a fraction) the seed estimate aims at: +-1 AP point
HALF_WIDTH = 0.01
log = logging.getLogger(__name__)

LOSSES = ("train_loss", "train_loss_ce", "train_loss_bbox", "train_loss_giou")
FIGSIZE = (8.0, 5.0)  # every plot is 800 x 500 pixels (figures.DPI)


class StudyError(UserError):
    """A study or run folder that cannot be compared (missing, no runs, an unknown baseline)."""


@dataclass
class Run:
    folder: Path
    variant: str
    seed: int | None
    log: list[dict]
    info: dict = field(default_factory=dict)

    @property
    def evaluated(self) -> list[dict]:
        return [r for r in self.log if "AP" in r]

    @property
    def finished(self) -> bool:
        """Whether the run logged its last epoch (``run_info.json`` names it; without one, yes) or
        was ended by early stopping."""
        epochs = self.info.get("epochs")
        return epochs is None or self.log[-1].get("epoch", 0) >= epochs or bool(self.info.get("stopped_early"))


@dataclass
class Row:
    variant: str
    runs: list[Run]
    stats: dict = field(default_factory=dict)  # metric -> (mean, std)
    intervals: dict = field(default_factory=dict)  # metric -> Interval of the mean over seeds
    paired: dict = field(default_factory=dict)  # metric -> PairedDifference against the baseline
    delta: float | None = None
    parameters: int | None = None
    irpe_parameters: int | None = None
    seconds_per_epoch: float | None = None
    inference_images_per_s: float | None = None

    def finals(self, metric: str) -> dict:
        """``seed -> final value of metric`` over the evaluated runs of this variant."""
        return {r.seed if r.seed is not None else str(r.folder): r.evaluated[-1].get(metric)
                for r in self.runs if r.evaluated}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # missing, damaged bytes or not JSON
        return {}


def discover_runs(paths) -> tuple[list[Run], str | None]:
    """Every finished run under ``paths`` (a run folder holds ``log.jsonl``), and the baseline
    variant a study folder names (``study.json``), if any. Runs of a study come in its variants'
    order; runs that have not logged their last epoch are left out, with a warning naming them."""
    runs, baseline = [], None
    for p in map(Path, paths):
        if not p.exists():
            raise StudyError(f"{p} does not exist")
        study = _read_json(p / "study.json")
        baseline = baseline or study.get("baseline")
        order = {name: i for i, name in enumerate(study.get("variants", {}))}
        found = []
        log_name = RunFolder.EPOCH_LOG
        folders = [p] if (p / log_name).is_file() else sorted(f.parent for f in p.rglob(log_name))
        for folder in folders:
            records = RunFolder(folder).read_log()
            if not records:
                continue
            meta = _read_json(folder / "variant.json")
            info = _read_json(folder / RunFolder.RUN_INFO)
            name = folder.name
            seed_dir = re.fullmatch(r"seed(\d+)", name)
            variant = meta.get("variant") or (folder.parent.name if seed_dir else re.sub(r"[_-]?seed\d+$", "", name))
            seed = meta.get("seed", info.get("seed", int(seed_dir.group(1)) if seed_dir else None))
            found.append(Run(folder, variant, seed, records, info))
        runs += sorted(found, key=lambda r: (order.get(r.variant, len(order)), r.seed if r.seed is not None else -1))
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        log.warning("left out, not finished: %s", ", ".join(
            f"{r.folder} (epoch {r.log[-1].get('epoch')} of {r.info['epochs']})" for r in unfinished))
        runs = [r for r in runs if r.finished]
    if not runs:
        raise StudyError(f"no run folders (with a log.jsonl) under {', '.join(map(str, paths))}")
    return runs, baseline


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if defined(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: list[Run], baseline: str | None = None) -> list[Row]:
    """One row per variant (in order of first appearance) with final metrics over seeds, their
    confidence intervals, and the seed-paired differences to the baseline."""
    order: dict[str, list[Run]] = {}
    for r in runs:
        order.setdefault(r.variant, []).append(r)
    rows = []
    for variant, group in order.items():
        row = Row(variant, group)
        for m in METRICS:
            values = [v for v in row.finals(m).values() if defined(v)]
            row.stats[m] = _mean_std(values)
            row.intervals[m] = t_interval(values)
        infos = [g.info for g in group if g.info]
        if infos:
            row.parameters = infos[0].get("parameters")
            row.irpe_parameters = infos[0].get("irpe_parameters")
        row.seconds_per_epoch = _mean_std([statistics.fmean(r["train_seconds"] for r in g.log) for g in group])[0]
        row.inference_images_per_s = _mean_std([g.evaluated[-1].get("inference_images_per_s") for g in group
                                                if g.evaluated])[0]
        rows.append(row)
    base = next((r for r in rows if r.variant == baseline), rows[0])
    for r in rows:
        r.delta = r.stats["AP"][0] - base.stats["AP"][0]
        if r is not base:
            r.paired = {m: paired_difference(r.variant, base.variant, m, r.finals(m), base.finals(m))
                        for m in PAIRED_METRICS}
    return rows


def _pct(value: float, sign: bool = False) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:{'+' if sign else ''}.1f}"


def _interval_text(interval: Interval) -> str:
    if math.isnan(interval.low):
        return _pct(interval.mean, sign=True)
    return f"{_pct(interval.mean, sign=True)} [{_pct(interval.low, sign=True)}, {_pct(interval.high, sign=True)}]"


def table(rows: list[Row], baseline: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table (AP in %, mean ± std over seeds; the AP
    difference to the baseline paired over seeds, with its 95% interval)."""
    base = baseline or rows[0].variant
    head = (["variant", "runs"] + list(METRICS)
            + [f"dAP vs {base} [95% CI]", "params (M)", "iRPE params", "s/epoch", "infer img/s"])
    body = []
    for r in rows:
        cells = [r.variant, str(len(r.runs))]
        for m in METRICS:
            mean, std = r.stats[m]
            cells.append("-" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}")
        cells.append(_interval_text(r.paired["AP"].interval) if r.paired else "(baseline)")
        cells.append("-" if r.parameters is None else f"{r.parameters / 1e6:.2f}")
        cells.append("-" if r.irpe_parameters is None else str(r.irpe_parameters))
        cells.append("-" if r.seconds_per_epoch is None or math.isnan(r.seconds_per_epoch) else f"{r.seconds_per_epoch:.0f}")
        ips = r.inference_images_per_s
        cells.append("-" if ips is None or math.isnan(ips) else f"{ips:.1f}")
        body.append(cells)
    return head, body


def verdict_table(rows: list[Row], half_width: float = HALF_WIDTH) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the verdicts: per variant and metric (AP, AP50, AP75) the paired
    difference to the baseline in points, its 95% interval, the verdict, and the seeds an
    interval of +-``half_width`` would need."""
    head = ["variant", "metric", "paired seeds", "difference", "95% CI", "verdict",
            f"seeds for ±{100 * half_width:g}"]
    body = []
    for r in rows:
        for m, d in r.paired.items():
            iv = d.interval
            ci = "-" if math.isnan(iv.low) else f"[{_pct(iv.low, sign=True)}, {_pct(iv.high, sign=True)}]"
            need = seeds_needed(d.differences, half_width)
            body.append([r.variant, m, str(iv.n), _pct(iv.mean, sign=True), ci, d.verdict,
                         "-" if need is None else (f">{MAX_SEEDS}" if need > MAX_SEEDS else str(need))])
    return head, body


def seed_advice(rows: list[Row], half_width: float = HALF_WIDTH, metric: str = "AP") -> list[str]:
    """One sentence per variant: how many more seeds the study needs for a ``metric`` interval
    of +-``half_width`` (estimated from the spread of the paired differences it has)."""
    lines = []
    for r in rows:
        d = r.paired.get(metric)
        if d is None:
            continue
        need = seeds_needed(d.differences, half_width)
        have = d.interval.n
        target = f"for ±{100 * half_width:g} {metric} ({r.variant} vs {d.baseline})"
        if need is None:
            lines.append(f"{target}: at least 2 paired seeds are needed to estimate it (have {have})")
        elif need > MAX_SEEDS:
            lines.append(f"{target}: more than {MAX_SEEDS} seeds")
        elif need <= have:
            lines.append(f"{target}: reached with the {have} seeds run")
        else:
            lines.append(f"{target}: about {need - have} more seeds ({need} in all)")
    return lines


def to_markdown(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_terminal(head, body) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]) + "\n"


def to_csv(rows: list[Row]) -> str:
    """Machine-readable numbers (fractions, not percentages)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["variant", "runs", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")),
                "delta_AP", *(f"paired_{m}_{s}" for m in PAIRED_METRICS for s in ("mean", "ci_low", "ci_high", "seeds",
                                                                                "verdict")),
                "parameters", "irpe_parameters", "seconds_per_epoch", "inference_images_per_s"])
    for r in rows:
        paired = []
        for m in PAIRED_METRICS:
            d = r.paired.get(m)
            paired += [d.interval.mean, d.interval.low, d.interval.high, d.interval.n, d.verdict] if d else [""] * 5
        w.writerow([r.variant, len(r.runs),
                    *(v for m in METRICS for v in (*r.stats[m], r.intervals[m].low, r.intervals[m].high)),
                    r.delta, *paired, r.parameters, r.irpe_parameters, r.seconds_per_epoch, r.inference_images_per_s])
    return out.getvalue()


def _curve(group: list[Run], key: str):
    """Epochs, and per epoch the mean of ``key`` over the runs of a variant with its 95% interval
    (the mean itself where there is one run)."""
    per_epoch: dict[int, list[float]] = {}
    for run in group:
        for r in run.log:
            if r.get(key) is not None:
                per_epoch.setdefault(r["epoch"], []).append(r[key])
    epochs = sorted(per_epoch)
    intervals = [t_interval(per_epoch[e]) for e in epochs]
    low = [iv.mean if math.isnan(iv.low) else iv.low for iv in intervals]
    high = [iv.mean if math.isnan(iv.high) else iv.high for iv in intervals]
    return epochs, [iv.mean for iv in intervals], low, high


def plot(rows: list[Row], out_dir: str | Path) -> list[Path]:
    """ap_vs_epoch.png, losses.png, final_ap.png and (with a baseline to pair against)
    paired_differences.png, each 800 x 500 px, in ``out_dir``. Bands and error bars are 95%
    t intervals over seeds."""
    out = Path(out_dir)
    paths = []

    fig = new_figure(*FIGSIZE)
    ax = fig.add_subplot()
    for r in rows:
        epochs, mean, lo, hi = _curve(r.runs, "AP")
        if epochs:
            line, = ax.plot(epochs, [100 * v for v in mean], marker="o", label=f"{r.variant} (n={len(r.runs)})")
            ax.fill_between(epochs, [100 * v for v in lo], [100 * v for v in hi], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="AP (%)", title="AP against epoch (mean over seeds; band: 95% interval)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_png(fig, out / "ap_vs_epoch.png"))

    fig = new_figure(*FIGSIZE)
    axes = fig.subplots(2, 2)
    for ax, key in zip(axes.flat, LOSSES):
        for r in rows:
            epochs, mean, lo, hi = _curve(r.runs, key)
            if epochs:
                line, = ax.plot(epochs, mean, label=r.variant)
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(key.replace("train_", ""), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("training losses against epoch (band: 95% interval over seeds)", fontsize=10)
    paths.append(save_png(fig, out / "losses.png"))

    fig = new_figure(*FIGSIZE)
    ax = fig.add_subplot()
    names = [r.variant for r in rows]
    means = [100 * r.intervals["AP"].mean for r in rows]
    errors = [0.0 if math.isnan(r.intervals["AP"].half_width) else 100 * r.intervals["AP"].half_width for r in rows]
    bars = ax.bar(names, means, yerr=errors, capsize=6, color="#4c72b0")
    for r, b, m in zip(rows, bars, means):
        ax.scatter([b.get_x() + b.get_width() / 2] * len(r.finals("AP")),
                   [100 * v for v in r.finals("AP").values()], color="black", s=12, zorder=3)
        ax.annotate(f"{m:.1f}", (b.get_x() + b.get_width() / 2, m), ha="center", va="bottom", fontsize=9,
                    xytext=(8, 3), textcoords="offset points")
    ax.set(ylabel="final AP (%)", title="final AP (mean, 95% interval; dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    paths.append(save_png(fig, out / "final_ap.png"))

    paired = [r for r in rows if r.paired]
    if paired:
        paths.append(save_png(paired_figure(paired), out / "paired_differences.png"))
    return paths


def paired_figure(rows: list[Row]):
    """The seed-paired differences to the baseline per variant and metric: mean, 95% interval
    and each seed's difference, in AP points, with the zero line."""
    fig = new_figure(*FIGSIZE)
    ax = fig.add_subplot()
    labels = []
    for i, (r, m) in enumerate((r, m) for r in rows for m in PAIRED_METRICS):
        d = r.paired[m]
        iv = d.interval
        y = -i
        if not math.isnan(iv.low):
            ax.errorbar([100 * iv.mean], [y], xerr=[[100 * (iv.mean - iv.low)], [100 * (iv.high - iv.mean)]],
                        fmt="o", color="#c44e52" if d.verdict == "worse" else "#55a868" if d.verdict == "better"
                        else "#4c72b0", capsize=5)
        else:
            ax.plot([100 * iv.mean], [y], "o", color="#4c72b0")
        ax.scatter([100 * v for v in d.differences], [y] * len(d.differences), color="black", s=10, zorder=3,
                   alpha=0.6)
        labels.append(f"{r.variant} {m}\n{d.verdict.replace('no difference detected', 'none detected')}")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks([-i for i in range(len(labels))], labels, fontsize=7)
    base = rows[0].paired[PAIRED_METRICS[0]].baseline
    ax.set(xlabel=f"difference to {base} (AP points)",
           title=f"seed-paired difference to {base}: mean and 95% interval (dots: seeds)")
    ax.grid(axis="x", alpha=0.3)
    return fig
