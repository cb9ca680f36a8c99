"""Choose a mode's learning rate on the dev split: successive halving over a grid (params `tune`).

Each trial is the mode's own recipe (data, loss, seed, schedule shape) compressed to fewer steps: warm-up
scaled with it, the schedule decaying to the trial's end. Rung 0 trains every candidate briefly; each later
rung keeps the better half (by the dev metric) and doubles their steps. The step counts are set so that all
trials together train `tune.budget` runs' worth of steps. Nothing here reads the eval split.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

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


def rank(scores: dict[float, float], tie: float) -> list[float]:
    """Learning rates best first. Within `tie` of the best, the smaller lr comes first (the safer setting)."""
    def key(lr: float) -> tuple[float, float]:
        v = scores[lr]
        return (-math.inf if math.isnan(v) else v, -lr)

    order = sorted(scores, key=key, reverse=True)
    best = scores[order[0]]
    if math.isnan(best):
        return order
    tied = sorted(lr for lr in order if scores[lr] >= best - tie)
    return tied + [lr for lr in order if lr not in tied]


def search(grid: tuple[float, ...], plan: list[tuple[int, int]], tie: float, metric: str,
           trial: Callable[[float, int], dict[str, float]]) -> tuple[float, list[dict[str, Any]]]:
    """Run the successive halving of `plan` over `grid`; `trial(lr, steps)` returns its dev figures.

    Returns the chosen learning rate and one row per trial (rung, lr, steps, dev figures, wall time)."""
    alive, rows = list(grid), []
    for rung, (_, steps) in enumerate(plan):
        scores = {}
        for lr in alive:
            start = time.perf_counter()
            figures = trial(lr, steps)
            rows.append({"rung": rung, "lr": lr, "steps": steps, **figures,
                         "wall_s": round(time.perf_counter() - start, 2)})
            scores[lr] = figures[f"dev_{metric}"]
            log.info("tune rung %d: lr %.2g, %d steps: dev %s %.4f", rung, lr, steps, metric, scores[lr])
        ranked = rank(scores, tie)
        keep = plan[rung + 1][0] if rung + 1 < len(plan) else 1
        alive = ranked[:keep]
    return alive[0], rows


def metric_for(cfg: Tune, binary: bool) -> str:
    """The dev metric trials are ranked by: AUC for binary labels, Spearman for graded (or as set)."""
    return cfg.metric if cfg.metric != "auto" else "auc" if binary else "spearman"


def full_steps(p: Params, n_train: int) -> int:
    """Optimizer steps of the train stage's run: train.max_steps, else the epochs."""
    from pairtune.training import steps_per_epoch

    return p.train.max_steps or p.train.epochs * steps_per_epoch(n_train, p.train.batch_size)


def trials(mode: str, p: Params, train_pairs: list[dict[str, Any]], dev_pairs: list[dict[str, Any]],
           binary: bool, base_dir: str, total: int) -> Callable[[float, int], dict[str, float]]:
    """`trial(lr, steps)`: train `mode` from the base at `lr` for `steps` (the recipe compressed: warm-up scaled
    with it) and return its dev AUC and Spearman. Same seed, data order and speed knobs as the train stage;
    the base is loaded and verified once and copied for each trial."""
    from pairtune import models, training

    base = models.load_model(base_dir, models.pick_device(p.train.device))
    evaluator = training.dev_evaluator(dev_pairs, p.data.positive_threshold)

    def trial(lr: float, steps: int) -> dict[str, float]:
        cfg = dataclasses.replace(p.train, max_steps=steps, checkpoint="last",
                                  warmup_steps=round(p.train.warmup_steps * steps / total))
        model, device, knobs, _ = training.start(mode, p, base_dir, base)
        training.train(model, train_pairs, dev_pairs, cfg, lr, p.seed, device, binary, p.data.positive_threshold,
                       knobs, epoch_eval=False)
        figures = evaluator(model)
        return {"dev_auc": round(float(figures["dev_auc"]), 6), "dev_spearman": round(float(figures["dev_spearman"]), 6)}

    return trial


def edge_note(mode: str, lr: float, grid: tuple[float, ...]) -> str | None:
    """A note when the choice is the grid's smallest or largest rate: the best may lie beyond it."""
    if len(grid) < 2 or min(grid) < lr < max(grid):
        return None
    side = "largest" if lr == max(grid) else "smallest"
    return (f"chose the {side} candidate ({lr:g}): a better rate may lie beyond tune.{mode}; "
            f"consider extending it that way")
