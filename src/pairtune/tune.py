"""Choose a mode's learning rate on the dev split: successive halving over a grid (params `tune`).

Each trial is the mode's own recipe (data, loss, seed, schedule shape) compressed to fewer steps: warm-up
scaled with it, the schedule decaying to the trial's end. Rung 0 trains every candidate briefly; each later
rung keeps the better half (by the dev metric) and doubles their steps. The step counts are set so that all
trials together train `tune.budget` runs' worth of steps. Nothing here reads the eval split.

Two guards against the short trials' bias toward large rates (measured in bench/operating.py: a brief trial
favours the rate that learns fastest, not the one that ends best): rates within `tune.tie` of the best trial
go to the one whose trial model kept more of the base's general similarity (the general set, as the
interpolate stage measures it), then to the smaller rate; and when the best of rung 0 is a grid edge, up to
`tune.extend` rates past that edge are tried too, so no search ends at an edge it did not look past.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pairtune.errors import PairtuneError
from pairtune.params import Params, Tune

log = logging.getLogger(__name__)

MIN_TRIAL_STEPS = 10  # below this a trial says more about warm-up than about the learning rate


def rung_plan(n_candidates: int, rungs: int, budget: float, full_steps: int) -> list[tuple[int, int]]:
    """(candidates, steps each) per rung: candidates halve (rounding up), steps double, and the total
    sum(candidates * steps) is at most budget * full_steps. Rungs that would keep one candidate are dropped."""
    counts = [math.ceil(n_candidates / 2**r) for r in range(rungs)]
    counts = [c for i, c in enumerate(counts) if i == 0 or c > 1 and c < counts[i - 1]]
    first = math.floor(budget * full_steps / sum(c * 2**r for r, c in enumerate(counts)))
    if first < MIN_TRIAL_STEPS:
        raise PairtuneError(f"params.yaml: tune.budget: {budget:g} of a {full_steps}-step run gives rung-0 trials "
                            f"of {first} steps (at least {MIN_TRIAL_STEPS}); raise tune.budget or lower tune.rungs")
    return [(c, min(first * 2**r, full_steps)) for r, c in enumerate(counts)]


def _finite(v: float | None) -> float:
    return -math.inf if v is None or math.isnan(v) else v


def rank(scores: dict[float, float], tie: float, retention: dict[float, float] | None = None) -> list[float]:
    """Learning rates best first. Within `tie` of the best, the one whose trial kept more general retention
    comes first, then the smaller lr (the safer setting); without retention figures, the smaller lr."""
    retention = retention or {}
    order = sorted(scores, key=lambda lr: (_finite(scores[lr]), -lr), reverse=True)
    best = scores[order[0]]
    if math.isnan(best):
        return order
    tied = sorted((lr for lr in order if scores[lr] >= best - tie), key=lambda lr: (-_finite(retention.get(lr)), lr))
    return tied + [lr for lr in order if lr not in tied]


def beyond(lr: float, tried: list[float]) -> float | None:
    """The next rate past `lr` when it is the largest or smallest rate tried (one outer grid step further, the
    ratio of the two outermost rates on that side, to 3 significant digits); None inside the range."""
    tried = sorted(tried)
    if len(tried) < 2 or tried[0] < lr < tried[-1]:
        return None
    step = tried[-1] / tried[-2] if lr == tried[-1] else tried[0] / tried[1]
    return float(f"{lr * step:.3g}")


def search(grid: tuple[float, ...], plan: list[tuple[int, int]], tie: float, metric: str,
           trial: Callable[[float, int], dict[str, float]], extend: int = 0,
           ) -> tuple[float, list[dict[str, Any]], list[float]]:
    """Run the successive halving of `plan` over `grid`; `trial(lr, steps)` returns its dev figures (and, where
    there is a general set, its `retention`). When rung 0's best is a grid edge, up to `extend` rates past it
    are tried at rung 0's steps before the halving goes on.

    Returns the chosen learning rate, one row per trial (rung, lr, steps, figures, wall time, extended) and
    the rates added past the grid."""
    alive, rows, added = list(grid), [], []
    for rung, (_, steps) in enumerate(plan):
        scores: dict[float, float] = {}
        retention: dict[float, float] = {}

        def run(lr: float, extended: bool = False) -> None:
            start = time.perf_counter()
            figures = trial(lr, steps)
            rows.append({"rung": rung, "lr": lr, "steps": steps, **figures, "extended": int(extended),
                         "wall_s": round(time.perf_counter() - start, 2)})
            scores[lr] = figures[f"dev_{metric}"]
            if "retention" in figures:
                retention[lr] = figures["retention"]
            log.info("tune rung %d: lr %.3g%s, %d steps: dev %s %.4f%s", rung, lr, " (past the grid)" if extended
                     else "", steps, metric, scores[lr], f", retention {retention[lr]:.3f}" if lr in retention else "")

        for lr in alive:
            run(lr)
        ranked = rank(scores, tie, retention)
        while rung == 0 and len(added) < extend and (nxt := beyond(ranked[0], list(scores))) is not None:
            # the best is an edge of what was tried: look one step past it before trusting it
            added.append(nxt)
            run(nxt, extended=True)
            ranked = rank(scores, tie, retention)
        keep = plan[rung + 1][0] if rung + 1 < len(plan) else 1
        alive = ranked[:keep]
    return alive[0], rows, added


def metric_for(cfg: Tune, binary: bool) -> str:
    """The dev metric trials are ranked by: AUC for binary labels, Spearman for graded (or as set)."""
    return cfg.metric if cfg.metric != "auto" else "auc" if binary else "spearman"


def full_steps(p: Params, n_train: int) -> int:
    """Optimizer steps of the train stage's run: train.max_steps, else the epochs."""
    from pairtune.training import steps_per_epoch

    return p.train.max_steps or p.train.epochs * steps_per_epoch(n_train, p.train.batch_size)


def general_scorer(pairs: list[dict[str, Any]], batch_size: int) -> Callable[[Any], float]:
    """`score(model)`: the model's Spearman on the general pairs (labels scaled to [0, 1]), as the interpolate
    stage measures retention."""
    from pairtune import metrics as M
    from pairtune import models

    texts = sorted({t for p in pairs for t in (p["text_1"], p["text_2"])})
    index = {t: i for i, t in enumerate(texts)}
    labels = np.array([p["label"] for p in pairs], dtype=float)
    return lambda model: float(M.spearman(M.pair_scores(models.embed(model, texts, batch_size), index, pairs), labels))


def trials(mode: str, p: Params, train_pairs: list[dict[str, Any]], dev_pairs: list[dict[str, Any]],
           binary: bool, base_dir: str, total: int, general: list[dict[str, Any]] | None = None,
           ) -> Callable[[float, int], dict[str, float]]:
    """`trial(lr, steps)`: train `mode` from the base at `lr` for `steps` (the recipe compressed: warm-up scaled
    with it) and return its dev AUC and Spearman and, given general pairs the base ranks the right way round,
    its retention (general Spearman / the base's). Same seed, data order and speed knobs as the train stage;
    the base is loaded and verified once and copied for each trial."""
    from pairtune import models, training

    base = models.load_model(base_dir, models.pick_device(p.train.device))
    evaluator = training.dev_evaluator(dev_pairs, p.data.positive_threshold)
    general_of = general_scorer(general, p.evaluate.batch_size) if general else None
    base_general = general_of(base) if general_of else math.nan
    if general_of and not base_general > 0:
        log.warning("general set: the base's Spearman is %.3f; ties between trials go to the smaller lr", base_general)
        general_of = None

    def trial(lr: float, steps: int) -> dict[str, float]:
        cfg = dataclasses.replace(p.train, max_steps=steps, checkpoint="last",
                                  warmup_steps=round(p.train.warmup_steps * steps / total))
        model, device, knobs, _ = training.start(mode, p, base_dir, base)
        training.train(model, train_pairs, dev_pairs, cfg, lr, p.seed, device, binary, p.data.positive_threshold,
                       knobs, epoch_eval=False, b_ratio=training.b_lr_ratio(p.train.method(mode)))
        figures = evaluator(model)
        out = {"dev_auc": round(float(figures["dev_auc"]), 6), "dev_spearman": round(float(figures["dev_spearman"]), 6)}
        if general_of:
            out["retention"] = round(general_of(model) / base_general, 6)
        return out

    return trial


def edge_note(mode: str, lr: float, tried: list[float], added: list[float]) -> str | None:
    """A note when the choice is still the smallest or largest rate tried (after any extension): the best may
    lie beyond it. None inside the range, and for a choice the extension found and then looked past."""
    if len(tried) < 2 or min(tried) < lr < max(tried):
        return None
    side = "largest" if lr == max(tried) else "smallest"
    past = f", {len(added)} past the grid (tune.extend)" if added else ""
    return (f"chose the {side} rate tried ({lr:g}{past}): a better rate may lie beyond it; "
            f"raise tune.extend or extend tune.{mode} that way")
