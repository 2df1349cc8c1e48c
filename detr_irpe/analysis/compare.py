"""Reading an ablation's answer from what its runs wrote: a table per variant (mean and standard
deviation over seeds) and plots. Only run folders are read (``log.jsonl``, ``run_info.json``,
``variant.json``), so runs trained elsewhere compare the same way."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.runs import read_log

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LOSSES = ("train_loss", "train_loss_ce", "train_loss_bbox", "train_loss_giou")
FIGSIZE, DPI = (8.0, 5.0), 100  # every plot is 800 x 500 pixels


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


@dataclass
class Row:
    variant: str
    runs: list[Run]
    stats: dict = field(default_factory=dict)  # metric -> (mean, std)
    delta: float | None = None
    parameters: int | None = None
    irpe_parameters: int | None = None
    seconds_per_epoch: float | None = None
    inference_images_per_s: float | None = None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def discover_runs(paths) -> tuple[list[Run], str | None]:
    """Every run under ``paths`` (a run folder holds ``log.jsonl``), and the baseline variant a
    study folder names (``study.json``), if any. Runs of a study come in its variants' order."""
    runs, baseline = [], None
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        study = _read_json(p / "study.json")
        baseline = baseline or study.get("baseline")
        order = {name: i for i, name in enumerate(study.get("variants", {}))}
        found = []
        folders = [p] if (p / "log.jsonl").is_file() else sorted(f.parent for f in p.rglob("log.jsonl"))
        for folder in folders:
            log = read_log(folder)
            if not log:
                continue
            meta = _read_json(folder / "variant.json")
            info = _read_json(folder / "run_info.json")
            name = folder.name
            seed_dir = re.fullmatch(r"seed(\d+)", name)
            variant = meta.get("variant") or (folder.parent.name if seed_dir else re.sub(r"[_-]?seed\d+$", "", name))
            seed = meta.get("seed", info.get("seed", int(seed_dir.group(1)) if seed_dir else None))
            found.append(Run(folder, variant, seed, log, info))
        runs += sorted(found, key=lambda r: (order.get(r.variant, len(order)), r.seed if r.seed is not None else -1))
    if not runs:
        raise FileNotFoundError(f"no run folders (with a log.jsonl) under {', '.join(map(str, paths))}")
    return runs, baseline


def _mean_std(values: list[float]) -> tuple[float, float]:
    # COCO writes -1 for a metric it cannot define (no object of that size): left out
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)) and v >= 0]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: list[Run], baseline: str | None = None) -> list[Row]:
    """One row per variant (in order of first appearance) with final metrics over seeds."""
    order: dict[str, list[Run]] = {}
    for r in runs:
        order.setdefault(r.variant, []).append(r)
    rows = []
    for variant, group in order.items():
        finals = [g.evaluated[-1] for g in group if g.evaluated]
        row = Row(variant, group)
        for m in METRICS:
            row.stats[m] = _mean_std([f.get(m) for f in finals])
        infos = [g.info for g in group if g.info]
        if infos:
            row.parameters = infos[0].get("parameters")
            row.irpe_parameters = infos[0].get("irpe_parameters")
        row.seconds_per_epoch = _mean_std([statistics.fmean(r["train_seconds"] for r in g.log) for g in group])[0]
        row.inference_images_per_s = _mean_std([f.get("inference_images_per_s") for f in finals])[0]
        rows.append(row)
    base = next((r for r in rows if r.variant == baseline), rows[0])
    for r in rows:
        r.delta = r.stats["AP"][0] - base.stats["AP"][0]
    return rows


def table(rows: list[Row], baseline: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table."""
    base = baseline or rows[0].variant
    head = ["variant", "runs"] + list(METRICS) + [f"dAP vs {base}", "params (M)", "iRPE params", "s/epoch", "infer img/s"]
    body = []
    for r in rows:
        cells = [r.variant, str(len(r.runs))]
        for m in METRICS:
            mean, std = r.stats[m]
            cells.append("-" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}")
        cells.append("-" if r.delta is None or math.isnan(r.delta) else f"{100 * r.delta:+.1f}")
        cells.append("-" if r.parameters is None else f"{r.parameters / 1e6:.2f}")
        cells.append("-" if r.irpe_parameters is None else str(r.irpe_parameters))
        cells.append("-" if r.seconds_per_epoch is None or math.isnan(r.seconds_per_epoch) else f"{r.seconds_per_epoch:.0f}")
        ips = r.inference_images_per_s
        cells.append("-" if ips is None or math.isnan(ips) else f"{ips:.1f}")
        body.append(cells)
    return head, body


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
    w.writerow(["variant", "runs", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "delta_AP", "parameters",
                "irpe_parameters", "seconds_per_epoch", "inference_images_per_s"])
    for r in rows:
        w.writerow([r.variant, len(r.runs), *(v for m in METRICS for v in r.stats[m]), r.delta, r.parameters,
                    r.irpe_parameters, r.seconds_per_epoch, r.inference_images_per_s])
    return out.getvalue()


def _curve(group: list[Run], key: str):
    """Epochs and per-epoch mean / min / max of ``key`` over the runs of a variant."""
    per_epoch: dict[int, list[float]] = {}
    for run in group:
        for r in run.log:
            if r.get(key) is not None:
                per_epoch.setdefault(r["epoch"], []).append(r[key])
    epochs = sorted(per_epoch)
    return (epochs, [statistics.fmean(per_epoch[e]) for e in epochs], [min(per_epoch[e]) for e in epochs],
            [max(per_epoch[e]) for e in epochs])


def plot(rows: list[Row], out_dir: str | Path) -> list[Path]:
    """ap_vs_epoch.png, losses.png and final_ap.png (each 800 x 500 px) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for r in rows:
        epochs, mean, lo, hi = _curve(r.runs, "AP")
        if epochs:
            line, = ax.plot(epochs, mean, marker="o", label=f"{r.variant} (n={len(r.runs)})")
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="AP", title="AP against epoch (mean; band: min to max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "ap_vs_epoch.png"))

    fig, axes = plt.subplots(2, 2, figsize=FIGSIZE, dpi=DPI)
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
    fig.suptitle("training losses against epoch", fontsize=10)
    paths.append(_save(fig, out / "losses.png"))

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    names = [r.variant for r in rows]
    means = [100 * r.stats["AP"][0] for r in rows]
    stds = [100 * r.stats["AP"][1] for r in rows]
    bars = ax.bar(names, means, yerr=stds, capsize=6, color="#4c72b0")
    for b, m in zip(bars, means):
        ax.annotate(f"{m:.1f}", (b.get_x() + b.get_width() / 2, m), ha="center", va="bottom", fontsize=9,
                    xytext=(0, 3), textcoords="offset points")
    ax.set(ylabel="final AP (%)", title="final AP (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out / "final_ap.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
