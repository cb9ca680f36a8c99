"""Base <-> tuned weight interpolation (WiSE-FT, LM-Cocktail's two-model case) and the general-quality check.

theta(alpha) = lerp(theta_base, theta_tuned, alpha): alpha 0 is the base model and alpha 1 the tuned one,
exactly (lerp is exact at both ends). For LoRA the tuned weights are the merged ones, so theta(alpha) is
the base plus alpha times the adapter's delta, which is what an adapter with its B matrices scaled by
alpha gives. One model holds the weights and each grid point rewrites only the tensors tuning changed
(12 for a query/value LoRA): no reload, and each text is embedded once per alpha (`Cache`).

The cost is embedding: (grid points scored) x (distinct dev + general texts) / throughput. A dev or general
split larger than `interpolate.grid_pairs` is scored on a seeded sample of that size at each grid point (the
general set in full at alpha 0, 1 and the chosen alpha: the reported retention), so the cost stops growing with
them. `descend` scores only the grid points the choice can depend on, and the texts evaluate already embedded
at alpha 0 (the base) and 1 (the tuned model) are put in the `Cache` instead of being embedded again.

alpha is chosen on the dev split and the general set only (`choose`); eval is scored once, at the choice.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairtune import io, models
from pairtune import metrics as M
from pairtune.errors import PairtuneError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

    from pairtune.params import Interpolate

log = logging.getLogger(__name__)


@dataclass
class Interpolator:
    """A model whose changed weights are set to lerp(base, tuned, alpha) in place by `set`."""

    model: SentenceTransformer
    base: dict[str, torch.Tensor]
    tuned: dict[str, torch.Tensor]

    @classmethod
    def between(cls, base: SentenceTransformer, tuned: SentenceTransformer) -> Interpolator:
        """Take `tuned` as the holder; keep copies of only the tensors in which the two models differ."""
        import torch

        b_state, t_state = base[0].model.state_dict(), tuned[0].model.state_dict()
        if set(b_state) != set(t_state):
            diff = sorted(set(b_state) ^ set(t_state))
            raise PairtuneError(f"the tuned model's weights do not match the base model's (e.g. {diff[0]!r})")
        changed = [k for k, v in t_state.items() if v.is_floating_point() and not torch.equal(v, b_state[k])]
        return cls(tuned, {k: b_state[k].detach().clone() for k in changed},
                   {k: t_state[k].detach().clone() for k in changed})

    def set(self, alpha: float) -> None:
        import torch

        state = self.model[0].model.state_dict()
        with torch.no_grad():
            for k, b in self.base.items():
                state[k].copy_(torch.lerp(b, self.tuned[k], float(alpha)))


def grid(steps: int) -> list[float]:
    """0, 1/steps, ..., 1 (exact ends)."""
    if steps < 1:
        raise PairtuneError(f"params.yaml: interpolate.steps: must be at least 1, got {steps}")
    return [round(i / steps, 10) for i in range(steps + 1)]


@dataclass
class Split:
    """Pairs to score at each alpha, their labels and (filled in by `sweep`) the cosines per alpha."""

    pairs: list[dict[str, Any]]
    positive_threshold: float

    @property
    def graded(self) -> np.ndarray:
        return np.array([p["label"] for p in self.pairs], dtype=float)

    @property
    def y(self) -> np.ndarray:
        return (self.graded >= self.positive_threshold).astype(int)

    def texts(self) -> list[str]:
        return sorted({t for p in self.pairs for t in (p["text_1"], p["text_2"])})


def _quality(s: np.ndarray, split: Split) -> dict[str, float]:
    y = split.y
    return {"auc": M.auc(s, y) if M.both_classes(y) else math.nan, "spearman": M.spearman(s, split.graded)}


Cache = dict[float, dict[str, "np.ndarray"]]  # alpha -> text -> embedding: nothing is embedded twice at one alpha


def embed_at(interp: Interpolator, alpha: float, texts: list[str], batch_size: int, cache: Cache) -> np.ndarray:
    """Embeddings of `texts` at alpha, one row a text; only texts not yet in `cache` at this alpha are encoded."""
    have = cache.setdefault(alpha, {})
    new = [t for t in texts if t not in have]
    if new:
        interp.set(alpha)
        have.update(zip(new, models.embed(interp.model, new, batch_size), strict=True))
    return np.stack([have[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def prefill(cache: Cache, alpha: float, texts: list[str], emb: np.ndarray) -> None:
    """Put embeddings computed elsewhere (evaluate's, of the base at alpha 0 or the tuned model at alpha 1: the
    same weights, bit for bit) into `cache`, so `sweep` does not embed those texts again at that alpha."""
    cache.setdefault(alpha, {}).update(zip(texts, emb, strict=True))


def sweep(interp: Interpolator, alphas: list[float], splits: dict[str, Split], batch_size: int,
          cache: Cache | None = None, stop_below: float | None = None,
          ) -> tuple[list[dict[str, float]], dict[float, dict[str, np.ndarray]]]:
    """For each alpha: AUC and Spearman on every split. Returns the curve rows (by alpha) and the cosines per alpha.

    Pass the same `cache` to a later call (e.g. the whole general set at a few alphas after a grid on a
    sample of it) and the texts it already embedded at those alphas are not embedded again.
    stop_below (the descending search, `interpolate.search: descend`): score the smallest alpha (the base: the
    retention reference), then the others from the largest down, and stop after the first whose dev AUC is more
    than `stop_below` under the best so far. Past that point the dev AUC has left the plateau the choice is made
    on, so lower alphas cannot be chosen unless the curve climbs back by more than `stop_below` on the way to
    the base (bench/operating.py checks this on every measured curve).
    """
    cache = {} if cache is None else cache
    texts = sorted({t for sp in splits.values() for t in sp.texts()})
    index = {t: i for i, t in enumerate(texts)}
    scores: dict[float, dict[str, np.ndarray]] = {}

    def score(alpha: float) -> dict[str, float]:
        emb = embed_at(interp, alpha, texts, batch_size, cache)
        scores[alpha] = {name: M.pair_scores(emb, index, sp.pairs) for name, sp in splits.items()}
        row: dict[str, float] = {"alpha": alpha}
        for name, sp in splits.items():
            for k, v in _quality(scores[alpha][name], sp).items():
                row[f"{name}_{k}"] = v
        log.info("alpha %.2f: %s", alpha, ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "alpha"))
        return row

    return walk(alphas, score, stop_below), scores


def walk(alphas: list[float], score: Callable[[float], dict[str, float]], stop_below: float | None,
         ) -> list[dict[str, float]]:
    """The rows `score` gives for the alphas `sweep` scores (see there), ordered by alpha."""
    if stop_below is None:
        return [score(a) for a in alphas]
    rows = [score(alphas[0])]
    best = -math.inf
    for alpha in reversed(alphas[1:]):
        rows.append(score(alpha))
        auc = _num(rows[-1]["dev_auc"])
        best = max(best, auc)
        if auc < best - stop_below:
            log.info("alpha %.2f: dev AUC %.4f is more than %.4f under the best so far (%.4f): the smaller alphas "
                     "are not scored (interpolate.search: descend)", alpha, auc, stop_below, best)
            break
    return sorted(rows, key=lambda r: r["alpha"])


def stop_below(cfg: Interpolate) -> float | None:
    """The descending search's stopping margin for this rule, or None: score the whole grid. Rule auc_drop
    chooses among alphas within max_auc_drop of the best dev AUC (and, without a general set, the best one), so
    an alpha that far under the best is out of the choice; rule retention can choose an alpha anywhere on the
    curve, so it scores every grid point."""
    return cfg.max_auc_drop if cfg.search == "descend" and cfg.rule == "auc_drop" else None


def sample(pairs: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """At most `n` of the pairs (0 = all): a seeded sample, kept in file order."""
    return [pairs[i] for i in M.sample_indices(len(pairs), n, seed)]


def retention_problem(rows: list[dict[str, float]]) -> str | None:
    """Why retention cannot be measured on this general set (None when it can): it is a share of the base's
    general Spearman, so that must be positive."""
    base = rows[0]["general_spearman"]
    if base > 0:
        return None
    return (f"the base model's Spearman on the general set is {base:.3f}; retention is a share of a positive "
            "correlation, so the general set must be one the base model ranks the right way round")


def add_retention(rows: list[dict[str, float]]) -> None:
    """retention = general Spearman at alpha / general Spearman of the base (alpha 0), on every row."""
    problem = retention_problem(rows)
    if problem:
        raise PairtuneError(f"general set: {problem}")
    base = rows[0]["general_spearman"]
    for r in rows:
        r["retention"] = r["general_spearman"] / base


def choose(rows: list[dict[str, float]], cfg: Interpolate) -> tuple[float, bool]:
    """The alpha > 0 to keep, and whether it meets the rule's constraint. Reads dev and general figures only.

    rule auc_drop: the highest retention among alphas whose dev AUC is within `max_auc_drop` of the best
    alpha's (buy back what costs almost nothing in-domain). rule retention: the highest dev AUC among alphas
    keeping `min_retention` of the base's general Spearman; if none does, the one keeping the most (flagged
    False). Ties go to more retention, then to the smaller alpha. Without a general set: the highest dev AUC,
    ties to the larger alpha (nearer the trained model).
    """
    tuned = [r for r in rows if r["alpha"] > 0]
    if "retention" not in tuned[0]:
        best = max(tuned, key=lambda r: (_num(r["dev_auc"]), _num(r["dev_spearman"]), r["alpha"]))
        return best["alpha"], True
    if cfg.rule == "auc_drop":
        top = max(_num(r["dev_auc"]) for r in tuned)
        ok = [r for r in tuned if _num(r["dev_auc"]) >= top - cfg.max_auc_drop]
        best = max(ok, key=lambda r: (r["retention"], _num(r["dev_auc"]), -r["alpha"]))
        return best["alpha"], True
    ok = [r for r in tuned if r["retention"] >= cfg.min_retention]
    if not ok:
        best = max(tuned, key=lambda r: (r["retention"], -r["alpha"]))
        return best["alpha"], False
    best = max(ok, key=lambda r: (_num(r["dev_auc"]), r["retention"], -r["alpha"]))
    return best["alpha"], True


def _num(v: float) -> float:
    return -math.inf if math.isnan(v) else v


def retention_ci(s_base: np.ndarray, s_tuned: np.ndarray, graded: np.ndarray, resamples: int, confidence: float,
                 seed: int) -> tuple[float, float]:
    """Bootstrap interval of Spearman(tuned) / Spearman(base), general pairs resampled jointly."""
    return M.bootstrap_ci(lambda i: M.retention_rows(s_base[i], s_tuned[i], graded[i]), len(graded), resamples,
                          confidence, seed)


def adapter_scaling(source: Path) -> str | None:
    """How theta(alpha) of an adapter folder stays an adapter, exactly: "lora" (B matrices times alpha: LoRA,
    rsLoRA, LoRA+, and PiSSA/OLoRA as saved, converted to a plain LoRA of the untouched base), "ia3" (vectors
    1 + alpha (l - 1)), or None where no rescaled adapter is exact (DoRA: its magnitude renormalises the
    direction), so the merged weights are interpolated and written whole."""
    mode = models.read_manifest(source)["mode"]
    if mode == "ia3":
        return "ia3"
    if mode == "lora":
        cfg = json.loads((source / models.ADAPTER_CONFIG).read_text(encoding="utf-8"))
        return None if cfg.get("use_dora") else "lora"
    return None


def write_model(interp: Interpolator, alpha: float, source: Path, out: Path) -> None:
    """Write theta(alpha) as an ordinary pairtune model folder, with its own probe.

    full: the interpolated weights. LoRA / rsLoRA: the source adapter with every B matrix scaled by alpha (its
    merged delta is alpha times the tuned one); IA3: every vector l as 1 + alpha (l - 1) (the merged weight
    W l lerps exactly so): still small adapters that load through the guard. DoRA: the interpolated merged
    weights as a full folder (a scaled DoRA adapter is not theta(alpha)); its manifest says so.
    """
    from safetensors.torch import load_file, save_file

    manifest = models.read_manifest(source)
    manifest["interpolation"] = {"alpha": alpha, "source": source.name}
    texts = json.loads((source / models.PROBE_TEXTS).read_text(encoding="utf-8"))
    base_probe = np.load(source / models.BASE_PROBE) if (source / models.BASE_PROBE).exists() else None
    if manifest["mode"] not in ("full", *models.ADAPTER_KINDS):
        raise PairtuneError(f"{source}: cannot interpolate a {manifest['mode']!r} model (full or an adapter)")
    scaling = adapter_scaling(source)
    if scaling is None:
        if manifest["mode"] != "full":
            manifest["merged_from"] = f"{manifest['mode']} (DoRA)"  # the export's card says what it ships
            manifest["mode"] = "full"
        interp.set(alpha)
        models.save_full(interp.model, out)
        model = interp.model
    else:
        weights = load_file(str(source / models.ADAPTER_WEIGHTS))
        if scaling == "ia3":
            scaled = {k: 1 + alpha * (v - 1) if "ia3_l" in k else v for k, v in weights.items()}
        else:
            scaled = {k: v * alpha if "lora_B" in k else v for k, v in weights.items()}
        save_file(scaled, str(out / models.ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (out / models.ADAPTER_CONFIG).write_bytes((source / models.ADAPTER_CONFIG).read_bytes())
        io.write_json(out / models.MANIFEST, manifest)  # the loader reads it; the probe follows below
        model = models.load_unverified(out)
    models.write_fingerprint(out, manifest, texts, models.embed_probe(model, texts), base_probe)
