"""interpolate: blend a tuned model back towards its base, choose the blend on dev + a general set, score it.

theta(alpha) = base + alpha * (tuned - base) over a grid of alpha (params `interpolate`), each scored on the
dev split (AUC, Spearman) and on the general-domain pairs of `general.path` (Spearman, AUC, retention =
general Spearman / the base's). alpha is chosen on those alone, then the chosen model is written as an
ordinary model folder (LoRA: the adapter with B scaled by alpha) and scored once on eval.
Reads params `seed`, `data.positive_threshold`, `train.device`, `evaluate.{batch_size,bootstrap,confidence}`,
`general.*`, `interpolate.*`, <base>/ (fingerprint), <model>/, <data>/{dev,eval}.jsonl and, if given, evaluate's
encodes of the base (--base-plots) and of the model (--model-plots): alpha 0 and 1 are those weights, so their
texts are not embedded again where the encode's key matches.
Writes <out>/ (the chosen model), <metrics>, <plots>/curve.json (one row per alpha scored), <plots>/chosen.json
(the chosen alpha's eval and general scores, pair by pair, for the report's paired comparison) and the chosen
model's encode of the dev and eval texts (<plots>/embeddings.npy: export's parity reference).
Run: python stages/interpolate.py --base models/base --model models/lora --data data/prepared \
         --out models/interpolated/lora --metrics metrics/interpolate/lora.json --plots plots/interpolate/lora \
         [--base-plots plots/evaluate/base --model-plots plots/evaluate/lora]
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import logging
from pathlib import Path

import numpy as np

from pairtune import interpolation as I
from pairtune import io, models, params
from pairtune import metrics as M
from pairtune.data import read_pairs, read_prepared
from pairtune.errors import run_stage, setup_logging
from pairtune.evaluation import embeddings_key, save_embeddings, stored_embeddings, unique_texts

log = logging.getLogger("interpolate")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--base", "--model", "--data", "--out", "--metrics", "--plots"):
        ap.add_argument(flag, required=True)
    for flag in ("--base-plots", "--model-plots"):  # evaluate's plots folders: their stored encodes
        ap.add_argument(flag)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    g, ev = p.general, p.evaluate
    alphas = I.grid(p.interpolate.steps)
    dev, eval_ = read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl")
    cap = p.interpolate.grid_pairs
    splits = {"dev": I.Split(I.sample(dev, cap, p.seed), p.data.positive_threshold)}
    gen = None
    if g.path:
        gen = I.Split(read_pairs(g.path, g), g.positive_threshold)  # the whole set: the reported figures
        splits["general"] = I.Split(I.sample(gen.pairs, cap, p.seed), g.positive_threshold)
    else:
        log.info("general.path is empty: no retention check; alpha is chosen on dev AUC alone")
    for name, whole_n in (("dev", len(dev)), ("general", len(gen.pairs) if gen else 0)):
        if name in splits and len(splits[name].pairs) < whole_n:
            log.info("%s: %d pairs; each grid point scores a seeded sample of %d (interpolate.grid_pairs)%s", name,
                     whole_n, len(splits[name].pairs), ", alpha 0, 1 and the chosen one all" if name == "general" else "")
    device = models.pick_device(p.train.device)
    interp = I.Interpolator.between(models.load_model(args.base, device), models.load_model(args.model, device))
    cache: I.Cache = {}
    texts = unique_texts(dev, eval_)  # what evaluate encoded, and the chosen model's encode below
    for alpha, folder, model_dir in ((0.0, args.base_plots, args.base), (1.0, args.model_plots, args.model)):
        stored = stored_embeddings(Path(folder), embeddings_key(
            texts, models.identity(model_dir), str(device), ev.batch_size)) if folder else None
        if stored is not None:
            I.prefill(cache, alpha, texts, stored)
    rows, _ = I.sweep(interp, alphas, splits, ev.batch_size, cache, I.stop_below(p.interpolate))
    out: dict[str, float | str] = {"general": int(bool(g.path)), "grid_points": len(alphas),
                             "grid_scored": len(rows), "dev_grid_pairs": len(splits["dev"].pairs)}
    if gen is not None and (problem := I.retention_problem(rows)):
        # An optional check: a general set the base cannot rank costs the retention figures, not the run.
        log.warning("general set %s: %s; alpha is chosen on dev AUC alone", g.path, problem)
        out.update(general=0, general_skipped=f"{g.path}: {problem}")
        gen = None
    if gen is not None:
        I.add_retention(rows)
    alpha, met = I.choose(rows, p.interpolate)
    chosen = next(r for r in rows if r["alpha"] == alpha)
    if not met:
        log.warning("no alpha > 0 keeps interpolate.min_retention %.3f of the base's general Spearman; chose "
                    "alpha %.2f, which keeps the most (%.3f)", p.interpolate.min_retention, alpha, chosen["retention"])
    out.update(alpha=alpha, retention_met=int(met), dev_auc=chosen["dev_auc"], dev_spearman=chosen["dev_spearman"])
    if gen is not None:
        # The reported general figures are on the whole set. Through the cache, only texts the grid did not
        # embed at these alphas (none when it saw every pair) are encoded.
        whole, s_gen = I.sweep(interp, sorted({0.0, alpha, 1.0}), {"general": gen}, ev.batch_size, cache)
        I.add_retention(whole)  # alpha 0 comes first
        at = {r["alpha"]: r for r in whole}
        out.update(general_pairs=len(gen.pairs), general_grid_pairs=len(splits["general"].pairs),
                   general_spearman_base=at[0.0]["general_spearman"], general_spearman_tuned=at[1.0]["general_spearman"],
                   retention_tuned=at[1.0]["retention"], general_auc_base=at[0.0]["general_auc"],
                   general_auc_tuned=at[1.0]["general_auc"], general_spearman=at[alpha]["general_spearman"],
                   general_auc=at[alpha]["general_auc"], retention=at[alpha]["retention"])
        for key, a in (("retention_tuned", 1.0), ("retention", alpha)):
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = I.retention_ci(
                s_gen[0.0]["general"], s_gen[a]["general"], gen.graded, ev.bootstrap, ev.confidence, p.seed)

    with io.atomic_dir(args.out) as tmp:
        I.write_model(interp, alpha, Path(args.model), tmp)
        model = models.load_model(tmp, device)  # the artefact itself, through the guard, is what eval scores
        identity = models.identity(tmp)
    # dev too: export checks its copies of this model against this encode instead of encoding again
    emb = models.embed(model, texts, ev.batch_size)
    s = M.pair_scores(emb, {t: i for i, t in enumerate(texts)}, eval_)
    graded = np.array([q["label"] for q in eval_], dtype=float)
    y = (graded >= p.data.positive_threshold).astype(int)
    out.update(eval_auc=M.auc(s, y), eval_spearman=M.spearman(s, graded))
    out["eval_auc_ci_low"], out["eval_auc_ci_high"] = M.bootstrap_ci(
        lambda i: M.auc_rows(s[i], y[i]), len(s), ev.bootstrap, ev.confidence, p.seed)
    log.info("chose alpha %.2f on dev%s: eval AUC %.4f, Spearman %.4f", alpha,
             " + general" if g.path else "", out["eval_auc"], out["eval_spearman"])
    # The operating point's own scores, pair by pair in file order: the report compares the methods there
    # with paired intervals (the same resampled eval pairs, the same resampled general pairs, for both).
    point: dict[str, object] = {"alpha": alpha, "eval_scores": [float(v) for v in s]}
    if gen is not None:
        point.update(general_scores=[float(v) for v in s_gen[alpha]["general"]],
                     general_base_scores=[float(v) for v in s_gen[0.0]["general"]],
                     general_labels=[float(v) for v in gen.graded])
    with io.atomic_dir(args.plots) as tmp:
        io.write_json(tmp / "curve.json", [{k: round(float(v), 6) for k, v in r.items() if not np.isnan(v)}
                                           for r in rows])
        io.write_json(tmp / "chosen.json", point)
        save_embeddings(tmp, emb, embeddings_key(texts, identity, str(device), ev.batch_size), str(device))
    io.write_json(args.metrics, {k: v if isinstance(v, str) else round(float(v), 6) for k, v in out.items()
                                 if isinstance(v, str) or not np.isnan(v)})


if __name__ == "__main__":
    run_stage(main)
