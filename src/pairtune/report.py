"""Render the self-contained HTML comparison report of the base and each tuned method (full, LoRA, ...).

`build` takes values (metrics, details, training curves, data summary, params, versions) and returns the
HTML and the paired-bootstrap comparison metrics; the stage does the reading and writing. Charts are
matplotlib PNGs embedded as base64, with no timestamps, so identical inputs give an identical file.
"""

from __future__ import annotations

import base64
import io as _io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pairtune.generate import PAIR_TYPE_WORDS
from pairtune.metrics import (auc_rows, paired_bootstrap, paired_retention, retention_rows, seed_spread,
                              spearman_rows)

METHODS = ("full", "lora")  # the tuned methods when none are named (params train.methods' default)
BASE_COLOR = "#8c8c8c"
# one colour per tuned method, in the order params lists them (full blue and LoRA red, as before there were more)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
HEADLINE = ("spearman", "auc", "margin", "f1")
TABLE_METRICS = (
    ("spearman", "Spearman (cosine vs label)", "1"), ("pearson", "Pearson", "1"),
    ("margin", "Similarity margin (mean pos - mean neg)", "2"), ("mean_cos_pos", "Mean cosine, positives", "2"),
    ("mean_cos_neg", "Mean cosine, negatives", "2"), ("cohens_d", "Cohen's d (pooled SD)", "3"),
    ("welch_t", "Welch's t", "3"), ("auc", "AUC-ROC", "4"),
    ("f1", "F1 at the dev threshold", "5"), ("precision", "Precision at the dev threshold", "5"),
    ("recall", "Recall at the dev threshold", "5"), ("accuracy", "Accuracy at the dev threshold", "5"),
    ("threshold", "Threshold chosen on dev", "5"), ("f1_oracle", "F1 oracle (threshold tuned on eval; optimistic)", "5"),
    ("cluster_purity", "Cluster purity (UMAP + HDBSCAN; median over UMAP seeds)", "6"),
    ("cluster_purity_seed_min", "Cluster purity, lowest of the UMAP seeds", "6"),
    ("cluster_purity_seed_max", "Cluster purity, highest of the UMAP seeds", "6"),
    ("cluster_chance", "Purity by chance (majority share)", "6"),
    ("cluster_noise_share", "HDBSCAN noise share", "6"), ("clusters", "Clusters found", "6"),
    ("cluster_ari", "ARI vs labels (clustered pairs)", "6"), ("cluster_nmi", "NMI vs labels (clustered pairs)", "6"),
    ("fp_count", "False positives at the dev threshold", "7"),
    ("fp_common_count", "False positives at the common operating point", "7"),
    ("recall_common", "Eval recall at the common operating point", "7"),
)
LOWER_IS_BETTER = {"fp_count", "fp_common_count", "mean_cos_neg", "cluster_noise_share"}


@dataclass(frozen=True)
class Inputs:
    metrics: dict[str, dict[str, float]]  # per model, every eval figure (details.json "metrics")
    details: dict[str, dict[str, Any]]  # per model, plots/evaluate/<m>/details.json
    roc: dict[str, list[dict[str, float]]]  # per model, plots/evaluate/<m>/roc.json (evaluate's sklearn roc_curve)
    train: dict[str, dict[str, float]]  # per mode, dvclive/train_<mode>/train.json + train_wall_s
    curves: dict[str, dict[str, list[tuple[float, float]]]]  # per mode, per series: (step, value)
    data: dict[str, Any]  # metrics/prepare.json
    params: dict[str, Any]  # params.yaml, as read
    versions: dict[str, str]
    positive_threshold: float
    bootstrap: int
    confidence: float
    seed: int
    examples: int  # errors shown per model, kind and pair type
    interpolate: dict[str, dict[str, float]] = field(default_factory=dict)  # per mode, metrics/interpolate/<mode>.json
    alpha_curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # per mode, one row per alpha
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)  # per mode, metrics/export/<mode>.json
    tune: dict[str, dict[str, Any]] = field(default_factory=dict)  # per mode, plots/tune/<mode>/trials.json
    plateau: float = 0.005  # report.plateau: a dev-metric change over the last epoch smaller than this is flat
    names: tuple[str, str] = ("similar", "dissimilar")  # data.positive_name, data.negative_name
    operating: dict[str, dict[str, Any]] = field(default_factory=dict)  # per mode, plots/interpolate/<m>/chosen.json
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # per mode, plots/seeds/<mode>/points.json
    # the tuned methods compared, in params order; the first is the reference every other one is compared with
    methods: tuple[str, ...] = METHODS

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the report shows: the base, then each tuned method."""
        return ("base", *self.methods)

    @property
    def ref(self) -> str:
        """The method the others are compared with (full fine-tuning, by default)."""
        return self.methods[0]

    @property
    def others(self) -> tuple[str, ...]:
        """The methods compared with the reference."""
        return self.methods[1:]

    def color(self, name: str) -> str:
        if name not in self.methods:
            return BASE_COLOR
        return PALETTE[self.methods.index(name) % len(PALETTE)]


def _png(fig: Any) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _panels(n: int, width: float, height: float, **kw: Any) -> tuple[Any, list[Any]]:
    """A figure of n panels `width` x `height` inches each, one row up to 4, then rows of 4 (unused cells
    hidden), so a chart per model stays readable with six tuned methods."""
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kw)
    if rows > 1:  # room between rows for each panel's title and the x label above it
        fig.subplots_adjust(hspace=0.45)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def charts(inp: Inputs) -> list[tuple[str, str, str]]:
    """(title, caption, data URI) for each chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "pairtune"})
    out = []
    m, d = inp.metrics, inp.details
    pos, neg = inp.names

    models = inp.models
    fig, axes = _panels(len(models), 11 / 3, 3, sharey=True)
    for ax, name in zip(axes, models, strict=True):
        s, y = np.array(d[name]["scores"]), np.array(d[name]["labels"])
        bins = np.linspace(-0.2, 1.0, 37)
        ax.hist(s[y == 1], bins=bins, alpha=0.6, label=f"{pos} (1)", color="#2ca02c")
        ax.hist(s[y == 0], bins=bins, alpha=0.6, label=f"{neg} (0)", color="#ff7f0e")
        ax.axvline(m[name]["threshold"], color="k", ls="--", lw=1)
        ax.set_title(name)
        ax.set_xlabel("cosine")
    axes[0].legend()
    out.append(("Cosine distributions per class", "Eval pairs; dashed line: the threshold chosen on dev.", _png(fig)))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name in models:  # evaluate's curve (up to 200 of its points), not sklearn again: ~1.2 s of import
        fpr, tpr = [r["fpr"] for r in inp.roc[name]], [r["tpr"] for r in inp.roc[name]]
        ax.plot(fpr, tpr, color=inp.color(name), label=f"{name} (AUC {m[name]['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="#ccc", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    out.append(("ROC curves", "Eval split. Below the diagonal means the ranking is inverted.", _png(fig)))

    colors = [inp.color(n) for n in models]
    many = len(models) > 3  # names under bars overlap from four models on: turned
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    for ax, key in zip(axes, HEADLINE, strict=True):
        vals = [m[n].get(key, math.nan) for n in models]
        lo = [v - m[n].get(f"{key}_ci_low", v) for n, v in zip(models, vals, strict=True)]
        hi = [m[n].get(f"{key}_ci_high", v) - v for n, v in zip(models, vals, strict=True)]
        ax.bar(models, vals, yerr=[lo, hi], capsize=4, color=colors)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(key)
        if many:
            ax.tick_params(axis="x", labelrotation=45)
    out.append(("Headline metrics with 95% bootstrap intervals",
                f"{inp.bootstrap} seeded resamples of eval pairs; F1 at the dev threshold.", _png(fig)))

    fig, ax = plt.subplots(figsize=(4.5 if not many else 1.1 * len(models), 3))
    ax.bar(models, [m[n].get("cohens_d", 0) for n in models], color=colors)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Cohen's d")
    out.append(("Effect size", f"Cohen's d of cosine, {pos} minus {neg} (pooled SD, ddof 1).", _png(fig)))

    if all(d[n].get("umap") for n in models):
        fig, axes = _panels(len(models), 11 / 3, 3.3)
        for ax, name in zip(axes, models, strict=True):
            xy, y = np.array(d[name]["umap"]), np.array(d[name]["labels"])
            if d[name].get("cluster_index") is not None:  # evaluate.cluster_sample: a sample of the pairs
                y = y[d[name]["cluster_index"]]
            ax.scatter(xy[y == 1, 0], xy[y == 1, 1], s=6, color="#2ca02c", label=pos)
            ax.scatter(xy[y == 0, 0], xy[y == 0, 1], s=6, color="#ff7f0e", label=neg)
            ax.set_title(f"{name}: purity {m[name].get('cluster_purity', math.nan):.2f}")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].legend(markerscale=2)
        n_points = m["base"].get("cluster_points", len(d["base"]["labels"]))
        sampled = (f" A seeded sample of {n_points:.0f} of the {len(d['base']['labels'])} eval pairs "
                   "(evaluate.cluster_sample)." if n_points < len(d["base"]["labels"]) else "")
        out.append(("UMAP of eval pairs", "One point per pair: [e1*e2, |e1-e2|], UMAP to 2-d (cosine)." + sampled,
                    _png(fig)))

        fig, ax = plt.subplots(figsize=(4.5 if not many else 1.1 * len(models), 3))
        ax.bar(models, [m[n].get("cluster_purity", 0) for n in models], color=colors)
        ax.axhline(m["base"]["cluster_chance"], color="k", ls="--", label="chance (majority share)")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
        out.append(("Cluster purity against chance", "HDBSCAN on the UMAP coordinates; noise points excluded.", _png(fig)))

    types = sorted({t for n in models for t in d[n]["fp_common"]["by_pair_type"]} |
                   {t for n in models for t in d[n]["by_pair_type"]})
    if has_groups(inp, "by_pair_type"):
        out.append(_fp_by_type_chart(inp, types))
    cats = sorted({c for n in models for c in d[n]["by_category"]})
    if has_groups(inp, "by_category"):
        out.append(_category_chart(inp, cats))
    out += _late_charts(inp)
    return out


def has_groups(inp: Inputs, key: str) -> bool:
    """Whether the data has the optional field a breakdown groups by (by_pair_type, by_category): prepare
    files a pair without it under 'none', so a breakdown with no other group means the field is absent."""
    return any(g != "none" for n in inp.models for g in inp.details[n].get(key, {}))


def _fp_by_type_chart(inp: Inputs, types: list[str]) -> tuple[str, str, str]:
    import matplotlib.pyplot as plt

    d = inp.details
    models = inp.models
    fig, ax = plt.subplots(figsize=(8 + 0.8 * max(0, len(models) - 3), 3))
    width = 0.81 / len(models)  # the bars of one type side by side, 0.27 each for three models
    for k, name in enumerate(models):
        vals = [d[name]["fp_common"]["by_pair_type"].get(t, 0) for t in types]
        ax.bar(np.arange(len(types)) + (k - (len(models) - 1) / 2) * width, vals, width, label=name,
               color=inp.color(name))
    ax.set_xticks(np.arange(len(types)), types, rotation=15)
    ax.set_ylabel("false positives")
    ax.legend()
    return ("False positives by pair type at a common operating point",
            "Each model at its own dev threshold for the same recall, so counts compare like for like.", _png(fig))


def _category_chart(inp: Inputs, cats: list[str]) -> tuple[str, str, str]:
    import matplotlib.pyplot as plt

    d = inp.details
    models = inp.models
    grid = np.array([[d[n]["by_category"].get(c, {}).get("auc", math.nan) for n in models] for c in cats])
    fig, ax = plt.subplots(figsize=(4.5 if len(models) <= 3 else 1.3 * len(models), 0.4 * len(cats) + 1))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(models)), models)
    ax.set_yticks(range(len(cats)), cats)
    for i in range(len(cats)):
        for j in range(len(models)):
            ax.text(j, i, "n/a" if math.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center")
    fig.colorbar(im, ax=ax)
    return "AUC per category and model", "n/a: a group with one class only (AUC undefined).", _png(fig)


def _late_charts(inp: Inputs) -> list[tuple[str, str, str]]:
    """The learning-rate search, the interpolation trade-off and the training curves."""
    import matplotlib.pyplot as plt

    out = []
    if any(r.get("searched") for r in inp.tune.values()):
        out.append(_tune_chart(inp))

    if inp.alpha_curves:
        out.append(_tradeoff_chart(inp))

    if inp.curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        for mode, series in [(n, inp.curves[n]) for n in inp.methods if n in inp.curves]:
            if series.get("train/loss"):
                st, v = zip(*series["train/loss"], strict=True)
                axes[0].plot(st, v, color=inp.color(mode), label=mode)
            if series.get("dev/auc"):
                st, v = zip(*series["dev/auc"], strict=True)
                axes[1].plot(st, v, marker="o", color=inp.color(mode), label=f"{mode} dev AUC")
            if series.get("dev/spearman"):
                st, v = zip(*series["dev/spearman"], strict=True)
                axes[1].plot(st, v, marker="s", ls="--", color=inp.color(mode), label=f"{mode} dev Spearman")
        axes[0].set_title("training loss")
        axes[1].set_title("dev metrics per epoch")
        for ax in axes:
            ax.set_xlabel("step")
            if len(inp.curves) <= 2:
                ax.legend()
            else:  # a line or two a method: beside the chart, not over the curves
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        if len(inp.curves) > 2:
            fig.subplots_adjust(wspace=0.6)
        out.append(("Training curves", "Logged by DVCLive during training (dev split only).", _png(fig)))
    return out


def _tune_chart(inp: Inputs) -> tuple[str, str, str]:
    """Per searched mode: the dev metric of every trial against its learning rate, one line per rung; rates
    tried past the grid hollow; each trial's general retention on a right axis where it was measured."""
    import matplotlib.pyplot as plt

    modes = [m for m in inp.methods if inp.tune.get(m, {}).get("searched")]
    cols = min(len(modes), 3)
    rows = math.ceil(len(modes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.6 * rows), squeeze=False)
    # room for each panel's right axis (and, in a grid, for the legend under each panel)
    fig.subplots_adjust(wspace=0.55, **({"hspace": 0.9} if rows > 1 else {}))
    cells = [a for row in axes for a in row]
    for ax in cells[len(modes):]:
        ax.set_visible(False)
    for ax, mode in zip(cells[:len(modes)], modes, strict=True):
        rec = inp.tune[mode]
        key = f"dev_{rec['metric']}"
        for rung in sorted({t["rung"] for t in rec["trials"]}):
            ts = sorted((t for t in rec["trials"] if t["rung"] == rung), key=lambda t: t["lr"])
            ax.plot([t["lr"] for t in ts], [t[key] for t in ts], marker="os^v"[rung % 4], color=inp.color(mode),
                    alpha=0.45 + 0.55 * (rung + 1) / (rec["trials"][-1]["rung"] + 1),
                    label=f"rung {rung}: {ts[0]['steps']} steps")
        past = [t for t in rec["trials"] if t.get("extended")]
        if past:
            ax.scatter([t["lr"] for t in past], [t[key] for t in past], s=340, facecolors="none",
                       edgecolors=inp.color(mode), linewidths=1.5, zorder=5, label="past the grid (tune.extend)")
        final = [t for t in rec["trials"] if t["lr"] == rec["lr"]][-1]
        ax.scatter([rec["lr"]], [final[key]], s=220, marker="*", color="#ff9f1c", zorder=4, label=f"chosen {rec['lr']:g}")
        handles, labels = ax.get_legend_handles_labels()
        if past:  # the ring drawn round a point is too big for the legend: a marker-sized one there
            from matplotlib.lines import Line2D

            handles[labels.index("past the grid (tune.extend)")] = Line2D(
                [], [], ls="", marker="o", ms=8, mfc="none", mec=inp.color(mode), mew=1.5)
        rung0 = sorted((t for t in rec["trials"] if t["rung"] == 0 and "retention" in t), key=lambda t: t["lr"])
        if rung0:
            right = ax.twinx()
            right.plot([t["lr"] for t in rung0], [t["retention"] for t in rung0], ls=":", marker="x", color="#666",
                       label="rung 0: general retention (ties)")
            right.set_ylabel("trial's general retention", color="#666")
            h, lab = right.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
        ax.set_xscale("log")
        grid = sorted({t["lr"] for t in rec["trials"]})  # the candidates, labelled as params.yaml writes them
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid])
        ax.minorticks_off()
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"dev {NAMES.get(rec['metric'], rec['metric'])}")
        ax.set_title(mode)
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return ("Learning-rate search (tune stage)", "Dev split only: each trial trains a candidate from the base with "
            "the recipe compressed to that many steps; with several rungs the better half goes on with twice the "
            "steps. When rung 0's best is the grid's largest or smallest rate, the search tries rates past it "
            "(hollow; tune.extend). The chosen rate is the best of the last rung; within tune.tie of it, the trial "
            "that kept more of the base's general similarity (dotted, right axis), then the smaller rate.", _png(fig))


def _base_floor(inp: Inputs, modes: list[str]) -> float | None:
    """Where to draw the base when the descending search skipped the alphas between it and the scored ones and
    it lies far below them (the demo's base: dev AUC 0.32 under points at 0.97): at a floor just under the
    scored points, so the trade-off they show is not squeezed into a strip at the top. None: draw it as is."""
    skipped = any(len(inp.alpha_curves[m]) < inp.interpolate.get(m, {}).get("grid_points", 0) for m in modes)
    scored = [r["dev_auc"] for m in modes for r in inp.alpha_curves[m][1:] if not math.isnan(r.get("dev_auc", math.nan))]
    base = [inp.alpha_curves[m][0].get("dev_auc", math.nan) for m in modes]
    if not skipped or not scored or any(math.isnan(b) for b in base):
        return None
    low, high = min(scored), max(scored)
    floor = low - max(0.02, 0.3 * (high - low))
    return floor if max(base) < floor else None


def _tradeoff_chart(inp: Inputs) -> tuple[str, str, str]:
    """Both methods on one chart: in-domain dev AUC against general retention along alpha, the chosen
    operating points starred (without a general set: dev AUC against alpha, a panel per method)."""
    import matplotlib.pyplot as plt

    modes = [m for m in inp.methods if m in inp.alpha_curves]
    general = all("retention" in inp.alpha_curves[m][0] for m in modes)
    if general:
        fig, axes = plt.subplots(1, 1, figsize=(7, 4.2), squeeze=False)
        axes = [axes[0][0]] * len(modes)
    else:
        fig, axes = _panels(len(modes), 5, 3.6)
    floor = _base_floor(inp, modes)
    for k, mode in enumerate(modes):
        ax = axes[k]
        rows = inp.alpha_curves[mode]
        xs = [r["retention"] if general else r["alpha"] for r in rows]
        ys = [r.get("dev_auc", math.nan) for r in rows]
        base_auc = ys[0]
        if floor is not None:  # the base far below every scored point: drawn at the chart's floor, value in its label
            ys[0] = floor
        skipped = len(rows) < inp.interpolate.get(mode, {}).get("grid_points", len(rows))
        # interpolate.search: descend left the alphas between the base and the lowest one it scored unscored:
        # a dotted jump, not a line that looks measured
        ax.plot(xs[1:] if skipped else xs, ys[1:] if skipped else ys, marker="o", color=inp.color(mode),
                label=MODE_NAMES.get(mode, mode))
        if skipped and len(rows) > 1:
            ax.plot(xs[:2], ys[:2], linestyle=":", color=inp.color(mode), linewidth=1)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"{r['alpha']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color=inp.color(mode))
        chosen = inp.interpolate.get(mode, {}).get("alpha")
        if chosen is not None:
            i = min(range(len(rows)), key=lambda j: abs(rows[j]["alpha"] - chosen))
            ax.scatter([xs[i]], [ys[i]], s=260, marker="*", color=inp.color(mode), edgecolor="#ff9f1c",
                       linewidth=1.5, zorder=4, label=f"{MODE_NAMES.get(mode, mode)}: chosen alpha {chosen:g}")
        if k == 0 or not general:
            ax.scatter([xs[0]], [ys[0]], s=80, color=BASE_COLOR, zorder=3, marker="v" if floor is not None else "o",
                       label=f"base (alpha 0): dev AUC {base_auc:.2f}, below the axis" if floor is not None
                       else "base (alpha 0)")
        ax.set_xlabel("general retention (Spearman / base's)" if general else "alpha")
        ax.set_ylabel("dev AUC")
        if not general:
            ax.set_title(mode)
        if len(modes) <= 2:
            ax.legend(fontsize=7, loc="lower left")
        else:  # two entries a method: beside the chart, not over the curves
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if general:
        axes[0].set_title("dev AUC against general retention, along alpha", fontsize=10)
    caption = ("theta(alpha) = base + alpha * (tuned - base); numbers next to points are alpha; up and to the "
               "right is better on both axes. Both are dev/general figures: each method's alpha (the star) is chosen "
               "here, then scored once on eval (table above)."
               if general else "No general set (general.path is empty): dev AUC along alpha only.")
    for mode in modes:
        rows, i = inp.alpha_curves[mode], inp.interpolate.get(mode, {})
        if len(rows) > 1 and len(rows) < i.get("grid_points", len(rows)):
            caption += (f" {MODE_NAMES.get(mode, mode)}: alphas between 0 and {rows[1]['alpha']:g} were not scored "
                        f"(dotted): the descending search stopped at {rows[1]['alpha']:g}, whose dev AUC is more "
                        "than interpolate.max_auc_drop under the best, so none below it could be chosen "
                        "(interpolate.search: grid scores them all).")
    sampled = {m: i for m, i in inp.interpolate.items() if i.get("general_grid_pairs", 0) < i.get("general_pairs", 0)}
    for mode, i in sorted(sampled.items()):
        caption += (f" {mode}: general Spearman along alpha is on a seeded sample of {i['general_grid_pairs']:.0f} of "
                    f"the {i['general_pairs']:.0f} general pairs (interpolate.grid_pairs); retention in the "
                    "table is on all of them.")
    return "Forgetting and buying it back: base-to-tuned interpolation", caption, _png(fig)


# Rows where "LoRA's share of full fine-tuning's gain" means something: higher is better and a gain is a gain
# (not a mean cosine of one class, a threshold, a count of clusters, an oracle or a chance level).
SHARE_METRICS = {"spearman", "pearson", "margin", "cohens_d", "welch_t", "auc", "f1", "precision", "recall",
                 "accuracy", "cluster_purity", "cluster_ari", "cluster_nmi"}


def _gain_share(base: float, ref: float, other: float) -> float:
    """A method's gain over the base as a share of the reference method's (full fine-tuning's); nan where the
    reference gained nothing."""
    gain = ref - base
    return (other - base) / gain if gain > 1e-9 else math.nan


def trivial_threshold(m: dict[str, float]) -> bool:
    """Whether a model's dev threshold calls every eval pair positive (recall 1 and every negative a false
    positive): its F1 is then the trivial rule's, 2p / (1 + p) for a positive share p, not a skill."""
    negatives = m.get("n_pairs", 0) - m.get("n_positives", 0)
    return bool(negatives) and m.get("recall") == 1.0 and m.get("fp_count") == negatives


def pairs(inp: Inputs) -> list[tuple[str, str]]:
    """The (first, second) model pairs the report compares: each method against the base, then each other
    method against the reference; keys read `<second>_vs_<first>_...` (lora_vs_full_auc_diff)."""
    return [("base", m) for m in inp.methods] + [(inp.ref, m) for m in inp.others]


def compare(inp: Inputs) -> dict[str, float]:
    """Paired bootstrap differences (each method minus base, each other method minus the reference) in AUC and
    Spearman, and each other method's share of the reference's gain."""
    d = inp.details
    y = np.array(d["base"]["labels"])
    graded = np.array(d["base"]["graded"])
    scores = {n: np.array(d[n]["scores"]) for n in inp.models}
    out: dict[str, float] = {}
    for a, b in pairs(inp):
        for k, v in paired_bootstrap(scores[a], scores[b], y, graded, inp.bootstrap, inp.confidence, inp.seed).items():
            out[f"{b}_vs_{a}_{k}"] = round(v, 6)
    for m in inp.others:
        for key in ("auc", "spearman", "margin", "f1"):
            share = _gain_share(*(inp.metrics[n].get(key, math.nan) for n in ("base", inp.ref, m)))
            if not math.isnan(share):
                out[f"{m}_share_of_{inp.ref}_gain_{key}"] = round(share, 6)
    out.update(compare_operating(inp, y, graded))
    return out


def compare_operating(inp: Inputs, y: np.ndarray, graded: np.ndarray) -> dict[str, float]:
    """Both axes at each method's operating point (the alpha the interpolate stage chose on dev + general):
    its eval AUC / Spearman and general retention, and each other method minus the reference on each with
    paired intervals (eval pairs resampled once for both methods; general pairs likewise). Empty unless
    every method has its operating point."""
    op, ref = inp.operating, inp.ref
    if not all(op.get(m, {}).get("eval_scores") for m in inp.methods):
        return {}
    s = {m: np.array(op[m]["eval_scores"], dtype=float) for m in inp.methods}
    if any(len(v) != len(y) for v in s.values()):
        raise ValueError("the operating points' eval scores do not match the eval split (rerun interpolate)")
    out: dict[str, float] = {}
    for m in inp.methods:
        out[f"op_{m}_alpha"] = float(op[m]["alpha"])
        out[f"op_{m}_auc"] = float(auc_rows(s[m][None], y[None])[0])
        out[f"op_{m}_spearman"] = float(spearman_rows(s[m][None], graded[None])[0])
    for m in inp.others:
        for k, v in paired_bootstrap(s[ref], s[m], y, graded, inp.bootstrap, inp.confidence, inp.seed).items():
            out[f"op_{m}_vs_{ref}_{k}"] = v
    if all("general_scores" in op[m] for m in inp.methods):
        g = np.array(op[ref]["general_labels"], dtype=float)
        base = np.array(op[ref]["general_base_scores"], dtype=float)
        gs = {m: np.array(op[m]["general_scores"], dtype=float) for m in inp.methods}
        for m in inp.methods:
            out[f"op_{m}_retention"] = retention_rows(base[None], gs[m][None], g[None])[0]
        for m in inp.others:
            for k, v in paired_retention(base, gs[ref], gs[m], g, inp.bootstrap, inp.confidence, inp.seed).items():
                out[f"op_{m}_vs_{ref}_{k}"] = v
    out.update(compare_seeds(inp, y, graded))
    return {k: round(v, 6) for k, v in out.items()}


def seed_count(inp: Inputs) -> int:
    """Training seeds per method behind the operating-point figures: 1, or seeds.n where every method has
    its extra seeds' scores."""
    extra = {len(inp.seeds.get(m, {}).get("extra", [])) for m in inp.methods}
    return 1 + extra.pop() if len(extra) == 1 and 0 not in extra else 1


def _per_seed(inp: Inputs) -> dict[str, list[dict[str, Any]]]:
    """Each method's records, one a training seed: the pipeline's own (interpolate's operating point) first,
    then the seeds stage's extra ones (each with its eval scores, and general scores where there is a set)."""
    return {m: [inp.operating[m], *inp.seeds[m]["extra"]] for m in inp.methods}


def compare_seeds(inp: Inputs, y: np.ndarray, graded: np.ndarray) -> dict[str, float]:
    """With seeds.n > 1: each method's operating-point figures as means over its training seeds, and each
    other method minus the reference, with intervals that resample the seeds as well as the pairs (seed k of
    one method paired with seed k of the other; `metrics.seed_spread`). Replaces compare_operating's one-seed
    figures; empty with one seed."""
    n = seed_count(inp)
    if n == 1:
        return {}
    ref, args = inp.ref, (inp.bootstrap, inp.confidence, inp.seed)
    runs = _per_seed(inp)
    ev = {m: [np.array(r["eval_scores"], dtype=float) for r in rs] for m, rs in runs.items()}
    out: dict[str, float] = {"op_seeds": n}
    for key, rows, target in (("auc", auc_rows, y), ("spearman", spearman_rows, graded)):
        for m in inp.methods:
            out[f"op_{m}_{key}"], out[f"op_{m}_{key}_ci_low"], out[f"op_{m}_{key}_ci_high"] = seed_spread(
                lambda k, i, m=m, rows=rows, t=target: rows(ev[m][k][i], t[i]), n, len(y), *args)
        for m in inp.others:
            d = seed_spread(lambda k, i, m=m, rows=rows, t=target: rows(ev[m][k][i], t[i]) - rows(ev[ref][k][i], t[i]),
                            n, len(y), *args)
            out.update(zip((f"op_{m}_vs_{ref}_{key}_diff{s}" for s in ("", "_ci_low", "_ci_high")), d, strict=True))
    if all("general_scores" in r for rs in runs.values() for r in rs):
        g = np.array(inp.operating[ref]["general_labels"], dtype=float)
        base = np.array(inp.operating[ref]["general_base_scores"], dtype=float)
        gs = {m: [np.array(r["general_scores"], dtype=float) for r in rs] for m, rs in runs.items()}
        for m in inp.methods:
            out[f"op_{m}_retention"], out[f"op_{m}_retention_ci_low"], out[f"op_{m}_retention_ci_high"] = seed_spread(
                lambda k, i, m=m: retention_rows(base[i], gs[m][k][i], g[i]), n, len(g), *args)
        for m in inp.others:
            d = seed_spread(lambda k, i, m=m: retention_rows(base[i], gs[m][k][i], g[i])
                            - retention_rows(base[i], gs[ref][k][i], g[i]), n, len(g), *args)
            out.update(zip((f"op_{m}_vs_{ref}_retention_diff{s}" for s in ("", "_ci_low", "_ci_high")), d,
                           strict=True))
    return out


def seed_rows(inp: Inputs) -> list[dict[str, Any]]:
    """One row per training seed: each method's eval figure and retention at its operating point (the
    pipeline's seed first, from the interpolate stage; the others from the seeds stage)."""
    n = seed_count(inp)
    if n == 1:
        return []
    key = primary(inp)
    d = inp.details["base"]
    target = np.array(d["labels"] if key == "auc" else d["graded"], dtype=float)
    rows_fn = auc_rows if key == "auc" else spearman_rows
    g = np.array(inp.operating[inp.ref].get("general_labels", []), dtype=float)
    base = np.array(inp.operating[inp.ref].get("general_base_scores", []), dtype=float)
    runs = _per_seed(inp)
    out = []
    for k, seed in enumerate(inp.seeds[inp.ref]["seeds"]):
        row: dict[str, Any] = {"seed": str(seed) + (" (the pipeline's)" if k == 0 else ""), "cells": []}
        for m in inp.methods:
            src = runs[m][k]
            row["cells"] += [f"{rows_fn(np.array(src['eval_scores'])[None], target[None])[0]:.3f}",
                             f"{retention_rows(base[None], np.array(src['general_scores'])[None], g[None])[0]:.2f}"
                             if "general_scores" in src and len(g) else "n/a"]
        out.append(row)
    return out


NAMES = {"auc": "AUC", "spearman": "Spearman"}
MODE_NAMES = {"full": "full fine-tuning", "lora": "LoRA"}  # a method in sentences; any other: its params name
SHORT_NAMES = {"full": "full", "lora": "LoRA"}  # ... in table headers and after a figure


def label(mode: str) -> str:
    """A method's name in a sentence: full fine-tuning, LoRA, or the name params.yaml gives it."""
    return MODE_NAMES.get(mode, mode)


def short(mode: str) -> str:
    """A method's name beside a figure or in a header: full, LoRA, or the name params.yaml gives it."""
    return SHORT_NAMES.get(mode, mode)


def _and(items: list[str]) -> str:
    """a; a and b; a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def primary(inp: Inputs) -> str:
    """The figure the verdict leads with: AUC for binary labels, Spearman for graded ones."""
    return "auc" if inp.data.get("binary_labels", 1) else "spearman"


def _chance(key: str) -> float:
    return 0.5 if key == "auc" else 0.0


def _moved(comparison: dict[str, float], b: str, a: str, key: str) -> int:
    """+1 if model b beats a on `key` by the paired bootstrap interval, -1 if it is worse, 0 if it cannot tell."""
    lo, hi = comparison.get(f"{b}_vs_{a}_{key}_diff_ci_low"), comparison.get(f"{b}_vs_{a}_{key}_diff_ci_high")
    if lo is None or hi is None:
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _retried(inp: Inputs, mode: str) -> float | None:
    """The searched rate whose whole run came apart on dev and was trained again (train.json), or None."""
    rec = inp.train.get(mode, {})
    return rec.get("searched_lr") if rec.get("retried") else None


def learning_rates(inp: Inputs) -> str:
    """Which learning rate each mode trained at, and where it came from."""
    parts = []
    for mode in inp.methods:
        lr = inp.train.get(mode, {}).get("lr")
        if lr is not None:
            rec = inp.tune.get(mode, {})
            past = len(rec.get("extended", []))
            how = (f"chosen on dev among {len({t['lr'] for t in rec['trials']})} rates"
                   + (f", {past} past the grid" if past else "") if rec.get("searched")
                   else "set in params.yaml, not searched")
            if retried := _retried(inp, mode):
                how += f"; its whole run at {retried:g} came apart on dev: retrained lower, tune.retries"
            parts.append(f"{label(mode)} at lr {lr:g} ({how})")
    return "; ".join(parts)


def verdict(inp: Inputs, comparison: dict[str, float]) -> str:
    """The headline in plain words: what fine-tuning did to the data's primary metric, how each method
    compares with the reference (full fine-tuning; paired bootstrap), and at which learning rates."""
    m, key, ref = inp.metrics, primary(inp), inp.ref
    name = NAMES[key]
    base = m["base"].get(key, math.nan)
    tuned = {n: m[n].get(key, math.nan) for n in inp.methods}
    inverted = base < _chance(key)
    figures = (f"eval {name} {base:.3f} (base{', inverted' if inverted else ''}) → "
               + _and([f"{tuned[n]:.3f} ({short(n)})" for n in inp.methods]))
    better = [n for n in inp.methods if _moved(comparison, n, "base", key) > 0]
    if len(better) == len(inp.methods):
        fixed = inverted and min(tuned.values()) > _chance(key)
        head = "Fine-tuning fixed the ranking" if fixed else "Fine-tuning improved the ranking"
    elif better:
        worse = [n for n in inp.methods if n not in better]
        why = ("its interval against the base includes 0 or lies below it" if len(worse) == 1 else
               "their intervals against the base include 0 or lie below it")
        head = (f"Only {_and([label(n) for n in better])} improved on the base; {_and([label(n) for n in worse])}"
                f" did not ({why})")
    else:
        head = "Fine-tuning did not improve on the base (no interval against the base lies above 0)"
    out = f"{head}: {figures}."
    if key == "spearman" and "auc" in m["base"]:
        out += (f" AUC at positive_threshold {inp.positive_threshold:g}: {m['base']['auc']:.3f} → "
                + " / ".join(f"{m[n]['auc']:.3f}" for n in inp.methods) + ".")
    if len(inp.others) > 1 and all(f"{o}_vs_{ref}_{key}_diff" in comparison for o in inp.others):
        moved = {o: _moved(comparison, o, ref, key) for o in inp.others}
        told = [f"{short(o)} {'better' if moved[o] > 0 else 'worse'}" for o in inp.others if moved[o]]
        out += (f" Each method minus {short(ref)}, {name}: "
                + ", ".join(f"{short(o)} {_diff(comparison, f'{o}_vs_{ref}_{key}')}" for o in inp.others) + "; "
                + (f"told apart from {label(ref)}: {_and(told)}." if told
                   else f"the eval split tells none of them apart from {label(ref)}."))
    for other in inp.others if len(inp.others) == 1 else ():
        d, lo, hi = (comparison.get(f"{other}_vs_{ref}_{key}_diff{s}") for s in ("", "_ci_low", "_ci_high"))
        if d is None or lo is None:
            continue
        said = {1: f"{short(other)} is better", -1: f"{label(ref)} is better",
                0: "the eval split cannot tell them apart"}
        share = comparison.get(f"{other}_share_of_{ref}_gain_{key}", math.nan)
        kept = (f"; {short(other)} kept {share:.1%} of {label(ref)}'s {name} gain"
                if not math.isnan(share) and tuned[ref] > base else "")
        out += (f" {short(other)} minus {short(ref)}: {name} {_signed(d)} [{_signed(lo)}, {_signed(hi)}], "
                f"{said[_moved(comparison, other, ref, key)]}{kept}.")
    rates = learning_rates(inp)
    return out + (f" Trained with {rates}." if rates else "")


def diagnose(points: list[tuple[float, float]], base: float | None, plateau: float, metric: str,
             apart_lr: float | None = None) -> tuple[str, str]:
    """One training run read from its own dev curve (one point an epoch): (finding, plain sentence).

    did_nothing: the last epoch is no better than the base (by more than `plateau`); unstable: more than
    `plateau` below its best and climbing back over the last epoch (a collapse at the peak learning rate, seen
    with LoRA+ on the harder demo: not an under-trained run, whose cure, more epochs or a higher rate, would be
    the wrong advice); over_fitted: fell more than `plateau` below its best; under_trained: at its best and still
    rising by more than `plateau` over the last epoch; else flat. `apart_lr`: a higher rate whose whole run came
    apart (tune.retries), so an under-trained run is not told to raise its rate."""
    vals = [v for _, v in points if not math.isnan(v)]
    if not vals:
        return "unknown", "no dev curve was logged"
    last, best = vals[-1], max(vals)
    if base is not None and not math.isnan(base) and last <= base + plateau:
        return "did_nothing", (f"ends at dev {metric} {last:.3f}, no better than the base's {base:.3f}: it did nothing "
                               "useful (check its learning rate, train.epochs and the labels)")
    rising = len(vals) >= 2 and last - vals[-2] > plateau
    if best - last > plateau:
        peak = vals.index(best) + 1
        if rising:
            low = min(vals[peak:])
            return "unstable", (f"peaked at epoch {peak} (dev {metric} {best:.3f}), dropped to {low:.3f} and ended "
                                f"at {last:.3f}, still below its peak: unstable; a lower learning rate")
        return "over_fitted", (f"peaked at epoch {peak} (dev {metric} {best:.3f}) and fell to {last:.3f}: over-fitted; "
                               "fewer train.epochs, train.checkpoint: best, or a lower learning rate")
    if rising:
        cure = (f"more train.epochs should help (a higher rate, {apart_lr:g}, came apart at full length)"
                if apart_lr else "more train.epochs, or a higher learning rate, should help")
        return "under_trained", (f"was still improving at the last epoch (dev {metric} {vals[-2]:.3f} → {last:.3f}): "
                                 f"under-trained; {cure}")
    return "converged", f"levelled off (dev {metric} {last:.3f}, within {plateau:g} over the last epoch)"


FLAGGED = ("did_nothing", "unstable", "over_fitted", "under_trained")  # findings the top of the report names


def diagnoses(inp: Inputs) -> dict[str, tuple[str, str]]:
    """Each mode's training run, diagnosed from its dev curve of the primary metric; the base's dev figure is
    alpha 0 of the interpolation grid (where that ran)."""
    key = primary(inp)
    out = {}
    for mode in [n for n in inp.methods if n in inp.curves]:
        series, curve = inp.curves[mode], inp.alpha_curves.get(mode) or [{}]
        out[mode] = diagnose(series.get(f"dev/{key}", []), curve[0].get(f"dev_{key}"), inp.plateau, NAMES[key],
                             _retried(inp, mode))
    return out


def top_notes(inp: Inputs, found: dict[str, tuple[str, str]]) -> list[str]:
    """Plain-words lines for the top of the report: runs the headline rests on that their curves flag (`found`:
    diagnoses(inp)), and export variants that were not shipped."""
    out = []
    flagged = {mode: finding for mode, (finding, _) in found.items()
               if finding in FLAGGED}
    if len(flagged) > 2:  # one line, not one a method: the table below has each run's sentence
        return [f"The headline rests on runs whose dev curves flag them: "
                + ", ".join(f"{label(m)} {f.replace('_', ' ')}" for m, f in flagged.items())
                + " (How each model was trained, below). Their figures may understate what those methods can do "
                "on this data."] + export_notes(inp)
    for mode, (finding, sentence) in found.items():
        if finding in FLAGGED:
            out.append(f"The headline rests on a {label(mode)} run that {sentence}. Its figures may understate "
                       f"what {label(mode)} can do on this data.")
    return out + export_notes(inp)


def _describe(pair_type: str) -> str:
    words = PAIR_TYPE_WORDS.get(pair_type)
    return f"{pair_type} ({words})" if words else pair_type


def by_count(groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Error groups, most errors first (details.json is written with sorted keys, so order is not kept)."""
    return dict(sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def error_summary(inp: Inputs) -> list[str]:
    """One plain sentence per model: what it still gets wrong at its dev threshold, biggest groups first."""
    out = []
    for name in inp.models:
        errors, m = inp.details[name].get("errors"), inp.metrics[name]
        if errors is None:
            continue
        parts = []
        pos, neg = inp.names
        for kind, what, verb, total in (("fp", neg, f"pass as {pos}", m["n_pairs"] - m["n_positives"]),
                                        ("fn", pos, "are rejected", m["n_positives"])):
            groups = by_count(errors[kind])
            n = sum(g["count"] for g in groups.values())
            top = ", ".join(f"{g['count']} of {g['of']} {_describe(t)}" for t, g in list(groups.items())[:2])
            grouped = n and has_groups(inp, "by_pair_type")
            parts.append(f"{n} of {int(total)} {what} pairs {verb}" + (f", most often {top}" if grouped else ""))
        flipped = sum(g["flipped"] for kind in errors.values() for g in kind.values())
        # Said before the counts, not after: these are label errors the data admits to, not the model's.
        head = (f"{flipped} of its errors {'is a pair' if flipped == 1 else 'are pairs'} the data marks as "
                "mislabelled (label_flipped: the right answer there is the model's, not the label's); ") if flipped else ""
        out.append(f"{name} (threshold {m['threshold']:.3f} from dev): " + head + "; ".join(parts) + ".")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        text = f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # never "-0"
    return str(v)


def _ci(m: dict[str, float], key: str) -> str:
    if key not in m:
        return "n/a"
    low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    return f"{_fmt(m[key])} [{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else _fmt(m[key])


def _paired_rows(inp: Inputs, comparison: dict[str, float]) -> list[dict[str, str]]:
    """One row per model pair, each difference with its interval in one cell."""
    rows = []
    for a, b in pairs(inp):
        row = {"pair": f"{short(b)} vs {short(a)}"}
        for key in ("auc", "spearman"):
            k = f"{b}_vs_{a}_{key}_diff"
            row[key] = (f"{comparison[k]:+.4f} [{comparison[f'{k}_ci_low']:+.4f}, {comparison[f'{k}_ci_high']:+.4f}]"
                        if k in comparison else "n/a")
        rows.append(row)
    return rows


def _retention_rows(inp: Inputs) -> list[dict[str, str]]:
    """The general-quality table: per tuned mode, what tuning cost on the general set and the chosen blend."""
    rows = []
    for mode in [n for n in inp.methods if n in inp.interpolate]:
        m = inp.interpolate[mode]
        rows.append({"mode": mode, "general": bool(m.get("general")), "skipped": m.get("general_skipped", ""),
                     "base": _fmt(m.get("general_spearman_base", math.nan)),
                     "tuned": _fmt(m.get("general_spearman_tuned", math.nan)),
                     "retention_tuned": _ci(m, "retention_tuned"), "alpha": _fmt(m.get("alpha", math.nan)),
                     "met": "yes" if m.get("retention_met") else "no (kept the most it could)",
                     "retention": _ci(m, "retention"), "eval_auc": _ci(m, "eval_auc"),
                     "eval_auc_tuned": _fmt(inp.metrics.get(mode, {}).get("auc", math.nan)),
                     "eval_spearman": _fmt(m.get("eval_spearman", math.nan))})
    return rows


VARIANTS = (("standalone", "./ (SentenceTransformer folder)", "", "standalone"),
            ("onnx", "onnx/model.onnx", "onnx_", "onnx"), ("int8", "onnx/model_qint8.onnx", "int8_", "int8"))


def _export_rows(inp: Inputs) -> list[dict[str, str]]:
    """One row per mode and variant: what the export stage shipped, and why a variant was left out."""
    rows = []
    for mode in [n for n in inp.methods if n in inp.exports]:
        e = inp.exports[mode]
        status = e.get("status", {})
        alpha = e.get("alpha", 1.0)
        # the standalone folder reproduces the model it was made from: at alpha 1 the tuned model (evaluate's
        # eval figures), else the interpolate stage's operating point (its eval figures)
        standalone = inp.metrics.get(mode, {}) if alpha == 1 else {
            k.removeprefix("eval_"): v for k, v in inp.interpolate.get(mode, {}).items() if k.startswith("eval_")}
        for variant, file, prefix, size in VARIANTS:
            src = standalone if variant == "standalone" else {k.removeprefix(prefix): v
                                                              for k, v in e.items() if k.startswith(prefix)}
            ok = status.get(variant, "ok") == "ok"
            rows.append({"mode": mode, "alpha": f"{alpha:g}", "variant": variant, "file": file,
                         "status": status.get(variant, "ok"),
                         "auc": _fmt(src.get("auc", math.nan)) if ok else "",
                         "spearman": _fmt(src.get("spearman", math.nan)) if ok else "",
                         "mb": f"{e[f'bytes_{size}'] / 1e6:.1f}" if ok and f"bytes_{size}" in e else ""})
    return rows


def export_notes(inp: Inputs) -> list[str]:
    """A line for the top of the report per export variant that was not shipped."""
    return [f"Export: {mode}'s {variant} was not shipped ({why}); the rest of models/export/{mode}/ was. "
            "See Exports below." for mode in inp.methods if mode in inp.exports
            for variant, why in inp.exports[mode].get("status", {}).items() if why != "ok"]


def _tune_rows(inp: Inputs, found: dict[str, tuple[str, str]]) -> list[dict[str, str]]:
    """One row per mode: the learning rate it trained at and how that was chosen (`found`: diagnoses(inp), which
    qualifies a search note the run contradicts)."""
    rows = []
    for mode in inp.methods:
        rec, lr = inp.tune.get(mode, {}), inp.train.get(mode, {}).get("lr")
        if lr is None:
            continue
        note = rec.get("note")
        finding = found.get(mode, ("", ""))[0]
        top = max((t["lr"] for t in rec.get("trials", [])), default=math.inf)
        retry = inp.train.get(mode, {}).get("retried", [])
        if note and retry:
            note += "; yet the whole run at that rate came apart (below), so look below it instead"
        elif note and finding in ("unstable", "over_fitted") and lr >= top:
            # the edge note points up; a full-length run that fell from its peak at that rate says the opposite
            note += (f"; yet the whole run at this rate was {finding.replace('_', '-')} (below): the short trials "
                     "ranked a rate the whole run does not bear, so look below it instead")
        if rec.get("searched"):
            rungs = sorted({(t["rung"], t["steps"]) for t in rec["trials"]})
            kind = "successive halving" if len(rungs) > 1 else "one trial per candidate"
            how = (f"{kind} on dev {NAMES.get(rec['metric'], rec['metric'])}: "
                   + ", then ".join(f"{sum(t['rung'] == r for t in rec['trials'])} x {steps} steps" for r, steps in rungs)
                   + f" ({sum(t['steps'] for t in rec['trials'])} trial steps; the run itself is {rec['run_steps']})"
                   + (f"; tried past the grid's edge: {', '.join(f'{x:g}' for x in rec['extended'])}"
                      if rec.get("extended") else "")
                   + ("; ties by trial retention" if rec.get("tie_break") == "retention" else "")
                   + (f". Note: it {note}" if note else "")
                   + (f". Checked at full length (tune.retries): {_retries(retry, rec['metric'])}; kept lr {lr:g}, "
                      "the run ending higher on dev" if retry else ""))
        else:
            how = "set in params.yaml (train.<mode>.lr is a number): no search"
        rows.append({"mode": label(mode), "lr": f"{lr:g}", "how": how})
    return rows


def _retries(retry: list[dict[str, float]], metric: str) -> str:
    """Each whole run of a retried rate (train.json's `retried`): its lr, its last and first dev figure."""
    return "; ".join(f"lr {r['lr']:g} ended at dev {NAMES.get(metric, metric)} {r[f'dev_{metric}_end']:.3f}, "
                     f"its first epoch {r[f'dev_{metric}_first']:.3f}" for r in retry)


def _signed(x: float) -> str:
    """+0.012 / -0.012, and +0.000 for a difference that rounds to zero (never "-0.000")."""
    return f"{round(x, 3) + 0.0:+.3f}"


def alpha_rule(params: dict[str, Any]) -> str:
    """How the interpolation chose alpha, in words, from the rule the run used."""
    if params.get("interpolate.rule") == "retention":
        return (f"interpolate.rule retention: the best dev AUC among alphas keeping "
                f"{params.get('interpolate.min_retention')} of the base's general Spearman")
    return (f"interpolate.rule auc_drop: the most general retention among alphas whose dev AUC is within "
            f"{params.get('interpolate.max_auc_drop')} of the best alpha's")


SEEDS_NOTE = ("Intervals cover the sampling of eval (and general) pairs for one training run per method (seeds.n 1); "
              "how far another training seed would move each figure is not measured.")


def seeds_note(c: dict[str, float]) -> str:
    """What the verdict's intervals cover: eval sampling alone, or the training seeds too."""
    n = int(c.get("op_seeds", 1))
    if n == 1:
        return SEEDS_NOTE
    return (f"Figures are means over {n} training seeds per method (seeds.n; each seed's point in the Seed spread "
            "table), and the intervals resample the seeds as well as the eval (and general) pairs.")


def _with_ci(c: dict[str, float], key: str) -> str:
    """A figure, with its interval where the comparison has one (the seeds' means do)."""
    if f"{key}_ci_low" not in c:
        return f"{c[key]:.3f}"
    return f"{c[key]:.3f} [{c[f'{key}_ci_low']:.3f}, {c[f'{key}_ci_high']:.3f}]"


def _diff(c: dict[str, float], key: str) -> str:
    """A paired difference with its interval: +0.012 [-0.003, +0.027]."""
    d, lo, hi = (c[f"{key}_diff{s}"] for s in ("", "_ci_low", "_ci_high"))
    return f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]"


def _pair_short(c: dict[str, float], other: str, ref: str, key: str, r: dict[str, float]) -> str:
    """The trade-off of one method against the reference in plain words (retention `r` per method)."""
    rlo, rhi = c[f"op_{other}_vs_{ref}_retention_diff_ci_low"], c[f"op_{other}_vs_{ref}_retention_diff_ci_high"]
    moved = _moved(c, f"op_{other}", ref, key)
    kept_more = other if rlo > 0 else ref if rhi < 0 else None
    if kept_more and moved == (1 if kept_more == other else -1):
        loser = ref if kept_more == other else other
        return (f"{label(kept_more)} is better on both axes: in-domain, and it keeps {r[kept_more]:.2f} of the base's "
                f"general similarity against {r[loser]:.2f}")
    where = {0: "equal in-domain", 1: f"{short(other)} is better in-domain",
             -1: f"{label(ref)} is better in-domain"}[moved]
    tell = "" if kept_more else " (the general set cannot tell them apart)"
    return f"{where}; {label(ref)} keeps {r[ref]:.2f} of the base's general similarity, {short(other)} {r[other]:.2f}{tell}"


def _pair_compact(c: dict[str, float], other: str, ref: str, key: str, r: dict[str, float]) -> str:
    """_pair_short in a few words, for a list of several methods against the reference."""
    rlo, rhi = c[f"op_{other}_vs_{ref}_retention_diff_ci_low"], c[f"op_{other}_vs_{ref}_retention_diff_ci_high"]
    where = {0: "equal in-domain", 1: "better in-domain", -1: "worse in-domain"}[_moved(c, f"op_{other}", ref, key)]
    kept = ("keeps more" if rlo > 0 else "keeps less" if rhi < 0 else "retention not told apart")
    return f"{where}, {kept} ({r[other]:.2f} vs {r[ref]:.2f})"


def _best_per_axis(inp: Inputs, c: dict[str, float], key: str, r: dict[str, float]) -> str:
    """With three methods or more: which is best on each axis, and whether the intervals against the
    reference can tell it from the reference."""
    name = NAMES[key]
    top = max(inp.methods, key=lambda m: c[f"op_{m}_{key}"])
    most = max(inp.methods, key=lambda m: r[m])
    sure = {m: (_moved(c, f"op_{m}", inp.ref, key) != 0,
                f"op_{m}_vs_{inp.ref}_retention_diff_ci_low" in c
                and (c[f"op_{m}_vs_{inp.ref}_retention_diff_ci_low"] > 0
                     or c[f"op_{m}_vs_{inp.ref}_retention_diff_ci_high"] < 0)) for m in inp.others}

    def told(m: str, axis: int) -> str:
        if m == inp.ref:
            return ""
        return (" (its interval against " + short(inp.ref) + (" excludes 0)" if sure[m][axis] else " includes 0)"))
    return (f"highest eval {name}: {label(top)} ({c[f'op_{top}_{key}']:.3f}){told(top, 0)}; most general "
            f"retention: {label(most)} ({r[most]:.2f}){told(most, 1)}")


def verdict_axes(inp: Inputs, comparison: dict[str, float]) -> str:
    """The verdict on both axes a user pays for, at each method's operating point (the alpha chosen on dev +
    general): in-domain eval quality and general retention, each other method minus the reference on each
    with a paired interval, then the trade-off in plain words (with three methods or more, the best on each
    axis first). One-axis, and said so, where there is no general set."""
    c, key, ref = comparison, primary(inp), inp.ref
    if f"op_{ref}_alpha" not in c:
        return ""
    name = NAMES[key]
    lrs = {m: inp.train.get(m, {}).get("lr") for m in inp.methods}
    point = {m: (f"lr {lrs[m]:g}, " if lrs[m] is not None else "") + f"alpha {c[f'op_{m}_alpha']:g}"
             for m in inp.methods}
    minus = "".join(f", {short(o)} minus {short(ref)} {_diff(c, f'op_{o}_vs_{ref}_{key}')}" for o in inp.others)
    out = (f"On both axes, at each method's operating point (lr and alpha chosen on dev + the general set, never "
           f"eval: {'; '.join(f'{short(m)} {point[m]}' for m in inp.methods)}): eval {name} "
           + _and([f"{_with_ci(c, f'op_{m}_{key}')} ({short(m)})" for m in inp.methods]) + minus)
    if f"op_{ref}_retention" not in c or any(f"op_{o}_vs_{ref}_retention_diff" not in c for o in inp.others):
        skipped = next((i["general_skipped"] for i in inp.interpolate.values() if i.get("general_skipped")), "")
        why = f"the general set was skipped ({skipped})" if skipped else "there is no general set (general.path)"
        return (f"{out}. The verdict is one-axis: {why}, so what tuning cost outside this data is not measured. "
                f"{seeds_note(c)}")
    it = _op_retention(inp, c)
    kept = [f"{it[m]['retention']:.2f} [{it[m]['retention_ci_low']:.2f}, {it[m]['retention_ci_high']:.2f}] ({short(m)})"
            for m in inp.methods]
    r = {m: it[m]["retention"] for m in inp.methods}
    minus = "".join(f", {short(o)} minus {short(ref)} {_diff(c, f'op_{o}_vs_{ref}_retention')}" for o in inp.others)
    if len(inp.others) == 1:
        said = _pair_short(c, inp.others[0], ref, key, r)
    elif inp.others:
        said = (_best_per_axis(inp, c, key, r) + f". Against {label(ref)}: "
                + "; ".join(f"{short(o)} {_pair_compact(c, o, ref, key, r)}" for o in inp.others))
    else:
        said = f"{label(ref)} keeps {r[ref]:.2f} of the base's general similarity"
    return (f"{out}; general retention (Spearman / the base's) {_and(kept)}{minus}. In short: {said}. "
            f"{_shipped(inp, c)} {seeds_note(c)}")


def _op_retention(inp: Inputs, c: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each method's general retention at its operating point with its interval: the interpolate stage's for one
    seed; for several, the seeds' means and seed-aware intervals."""
    return {m: {k: c[f"op_{m}_{k}"] if "op_seeds" in c else inp.interpolate[m][k]
                for k in ("retention", "retention_ci_low", "retention_ci_high")} for m in inp.methods}


def glance(inp: Inputs, c: dict[str, float]) -> dict[str, Any] | None:
    """With three methods or more, the verdict's figures as a table under it (the sentences list them all, which
    reads as a wall at six): a row a method at its operating point, each axis with its interval and minus the
    reference with the paired one, and the trade-off in a few words. None with two methods or no operating point."""
    key, ref = primary(inp), inp.ref
    if len(inp.methods) < 3 or f"op_{ref}_alpha" not in c:
        return None
    two_axes = f"op_{ref}_retention" in c and all(f"op_{o}_vs_{ref}_retention_diff" in c for o in inp.others)
    it = _op_retention(inp, c) if two_axes else {}
    r = {m: it[m]["retention"] for m in it}
    head = ["method", "lr, alpha", f"eval {NAMES[key]}", f"minus {short(ref)}"]
    if two_axes:
        head += ["general retention", f"minus {short(ref)}", f"against {short(ref)}"]
    rows = []
    for m in inp.methods:
        lr = inp.train.get(m, {}).get("lr")
        point = (f"{lr:g}, " if lr is not None else "") + f"{c[f'op_{m}_alpha']:g}"
        row = [label(m), point, _with_ci(c, f"op_{m}_{key}"),
               "reference" if m == ref else _diff(c, f"op_{m}_vs_{ref}_{key}")]
        if two_axes:
            row += [f"{r[m]:.2f} [{it[m]['retention_ci_low']:.2f}, {it[m]['retention_ci_high']:.2f}]",
                    "" if m == ref else _diff(c, f"op_{m}_vs_{ref}_retention"),
                    "" if m == ref else _pair_compact(c, m, ref, key, r)]
        rows.append(row)
    return {"head": head, "rows": rows}


def _as_trained(first: str, second: str) -> str:
    """The first verdict line says which models it compares when a second line compares others."""
    return (f"{first} These are the models as trained (alpha 1); the next line compares each method at its "
            "operating point.") if second else first


def _shipped(inp: Inputs, c: dict[str, float]) -> str:
    """Which models models/export holds: these operating points, or the alpha-1 models (export.operating_point)."""
    alphas = {m: inp.exports.get(m, {}).get("alpha") for m in inp.methods}
    if all(a is not None and abs(a - c[f"op_{m}_alpha"]) < 1e-9 for m, a in alphas.items()):
        return "models/export ships these operating points (export.operating_point: chosen)."
    return ("models/export holds the models as trained (alpha 1; export.operating_point: tuned); these operating "
            "points are models/interpolated/.")


def build(inp: Inputs) -> tuple[str, dict[str, float]]:
    """The report HTML and the comparison metrics."""
    from importlib.resources import files

    from jinja2 import Environment, select_autoescape

    comparison = compare(inp)
    found = diagnoses(inp)
    m, models, ref = inp.metrics, inp.models, inp.ref
    rows = []
    for key, title, group in TABLE_METRICS:
        vals = [m[n].get(key, math.nan) for n in models]
        delta = [v - vals[0] for v in vals[1:]]
        shown = [_fmt(v) for v in vals]
        if key == "f1":  # a threshold that calls every pair positive scores the positives' F1 by default: say so
            for i, n in enumerate(models):
                if trivial_threshold(m[n]):
                    shown[i] += f" (calls every pair {inp.names[0]}: the trivial rule's F1)"
        shares = [_gain_share(vals[0], vals[1], v) for v in vals[2:]]
        rows.append({"label": title, "group": group, "values": shown,
                     "delta": [_fmt(x) for x in delta],
                     "shares": [_fmt(x) if key in SHARE_METRICS and not math.isnan(x) else "" for x in shares],
                     "ci": [(_fmt(m[n][f"{key}_ci_low"]), _fmt(m[n][f"{key}_ci_high"]))
                            if f"{key}_ci_low" in m[n] and not (key == "f1" and trivial_threshold(m[n])) else None
                            for n in models]})
    if any(i.get("general") for i in inp.interpolate.values()):
        # What tuning cost on the general set sits in the headline table too: base is 1 by definition.
        it = inp.interpolate
        for key, title in (("general_spearman", "General-set Spearman (interpolate stage)"),
                           ("retention", "General-set retention (Spearman / base's)")):
            vals = [it.get(ref, {}).get(f"{key}_base", math.nan) if key == "general_spearman" else 1.0] + [
                it.get(n, {}).get(f"{key}_tuned", math.nan) for n in inp.methods]
            ci = [None] + [(_fmt(it[n][f"{key}_tuned_ci_low"]), _fmt(it[n][f"{key}_tuned_ci_high"]))
                           if f"{key}_tuned_ci_low" in it.get(n, {}) else None for n in inp.methods]
            rows.append({"label": title, "group": "G", "values": [_fmt(v) for v in vals],
                         "delta": [_fmt(v - vals[0]) for v in vals[1:]], "shares": [""] * len(inp.others), "ci": ci})
    # learning rates as params.yaml and the verdict write them (2e-04 beside 0.004 read as two formats)
    # a retry's record (tune.retries) is told in the learning-rate table, not a column of this one
    cost = [{"mode": mode, **{k: f"{v:g}" if k == "lr" else _fmt(v) for k, v in inp.train[mode].items()
                              if k not in ("retried", "searched_lr")},
             "artifact_mb": f"{inp.train[mode]['artifact_bytes'] / 1e6:.2f}"} for mode in inp.methods]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["by_count"] = by_count
    template = env.from_string(files("pairtune").joinpath("templates/report.html").read_text(encoding="utf-8"))
    axes = verdict_axes(inp, comparison)
    html = template.render(
        title=" vs ".join(["base", *(label(n) for n in inp.methods)]),
        verdict=_as_trained(verdict(inp, comparison), axes),
        verdict_axes=axes, glance=glance(inp, comparison), summary=error_summary(inp), charts=charts(inp), rows=rows,
        models=models,
        methods=[(n, short(n)) for n in inp.methods], ref=(ref, short(ref), label(ref)),
        deltas=len(inp.methods) <= 2,  # a difference column a method: readable up to two, then the paired table
        others=[(n, short(n)) for n in inp.others],
        cost=cost,
        comparison=sorted(comparison.items()), details=inp.details, examples=inp.examples, data=inp.data,
        params=inp.params, versions=sorted(inp.versions.items()), bootstrap=inp.bootstrap,
        confidence=inp.confidence, metrics=m, names=inp.names, has_types=has_groups(inp, "by_pair_type"),
        breakdown_keys=[k for k in ("by_category", "by_pair_type") if has_groups(inp, k)],
        absent=[f for k, f in (("by_category", "category"), ("by_pair_type", "pair_type")) if not has_groups(inp, k)],
        retention=_retention_rows(inp), exports=_export_rows(inp), top_notes=top_notes(inp, found),
        diagnosis=[(label(mode), finding, sentence) for mode, (finding, sentence) in found.items()],
        tune=_tune_rows(inp, found),
        seed_rows=seed_rows(inp), seeds_cost={n: inp.seeds[n].get("wall_s") for n in inp.methods
                                              if inp.seeds.get(n, {}).get("wall_s")},
        alpha_rule=alpha_rule(inp.params),
        paired=_paired_rows(inp, comparison),
        shares=[(short(o), [(key, _fmt(comparison.get(f"{o}_share_of_{ref}_gain_{key}", math.nan)))
                            for key in ("auc", "spearman", "margin", "f1")]) for o in inp.others],
    )
    return html, comparison
