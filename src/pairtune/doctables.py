"""Result tables for README and docs, generated from the files they report on: `make tables`.

A table lives in a Markdown file between two markers:

    <!-- table: results | metrics/evaluate/base.json=e248dc63… plots/evaluate/base/details.json=7de6d009….dir -->
    | metric (eval, 400 pairs) | base | ...
    <!-- /table -->

The opening marker names the table and every file it was made from, each with its *committed* hash: the
md5 that dvc.lock records for the pipeline output holding it (a `.dir` hash for a file inside a folder
output), or the md5 of the file itself for files git tracks outside the pipeline (bench/*.json,
params.yaml). `check()` (run by the tests) fails when a recorded hash is not the committed one (the
metrics changed and the tables were not regenerated: works in a clean clone, where DVC-cached files are
absent) and, wherever the source files are present and are the committed ones, when the table text differs
from what they generate now.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

MARKER = re.compile(r"<!-- table: (?P<name>[\w-]+)(?: \| (?P<sources>[^>]*?))? -->\n(?P<body>.*?)<!-- /table -->\n",
                    re.S)
MODES = ("full", "lora")
MODELS = ("base", "full", "lora")
STAGE_ORDER = ["generate", "prepare", "base", "tune", "train", "evaluate", "interpolate", "export", "report"]
MODE_TITLE = {"base": "base", "full": "full", "lora": "LoRA"}


class StaleTable(Exception):
    """A generated table disagrees with the files it reports on."""


# ---------------------------------------------------------------- where a source's committed hash comes from


@dataclass(frozen=True)
class Source:
    path: str  # relative to the repository root
    committed: str  # dvc.lock's hash of the output holding it, or the file's own md5
    present: bool  # the file is here and is the committed version


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _lock_outs(root: Path) -> dict[str, str]:
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text()) or {}
    return {out["path"]: out["md5"] for stage in lock.get("stages", {}).values() for out in stage.get("outs", [])}


def resolve(root: Path, rel: str, outs: dict[str, str]) -> Source:
    """The committed hash of one source file, and whether the file here is that version."""
    path = root / rel
    for out, md5 in outs.items():
        if rel == out:
            return Source(rel, md5, path.is_file() and _md5(path) == md5)
        if rel.startswith(out + "/") and md5.endswith(".dir"):
            want = _committed_md5(root, rel)
            return Source(rel, md5, want is not None and path.is_file() and _md5(path) == want)
    return Source(rel, _md5(path) if path.is_file() else "missing", path.is_file())


@functools.lru_cache(maxsize=None)
def _committed_md5(root: Path, rel: str) -> str | None:
    """The md5 dvc.lock gives `rel`, a file inside a folder output, through DVC's public API (the object's
    address on the remote ends in its md5); None where DVC cannot tell (the folder's listing is not in the
    local cache, as in a clean clone, or no remote is configured)."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexDirError

    try:
        url = dvc.api.get_url(rel, repo=str(root))
    except (DvcException, DataIndexDirError):
        return None
    head, tail = url.rstrip("/").split("/")[-2:]
    return head + tail if len(head) == 2 and len(head + tail) == 32 else None


# ---------------------------------------------------------------- formatting


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _ci(x: float, low: float, high: float, digits: int = 3) -> str:
    return f"{_f(x, digits)} [{_f(low, digits)}, {_f(high, digits)}]"


def _signed_ci(x: float, low: float, high: float, digits: int = 3) -> str:
    """+0.012 [-0.003, +0.020]; a figure that rounds to zero is +0.000, never -0.000 (as the report writes it)."""
    def signed(v: float) -> str:
        return f"{round(v, digits) + 0.0:+.{digits}f}"

    return f"{signed(x)} [{signed(low)}, {signed(high)}]"


def _lr(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = [_row(*header), _row(*["---"] * len(header))] + [_row(*r) for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the tables

Read = Callable[[str], Any]


def _lr_note(read: Read, mode: str) -> str:
    tune = read(f"metrics/tune/{mode}.json")[mode]
    how = "chosen on dev" if tune.get("trials") else "set in params.yaml"
    return f"lr {_lr(tune['lr'])}, {how}"


def _purity(m: dict[str, Any], d: dict[str, Any]) -> str:
    if "purity" not in m:
        return "n/a"
    if "cluster_purity_seed_min" in d:
        return _ci(m["purity"], d["cluster_purity_seed_min"], d["cluster_purity_seed_max"])
    return _f(m["purity"])


def results(read: Read) -> str:
    """The eight metrics on eval for base, full and LoRA, with intervals where evaluate computes them."""
    m = {k: read(f"metrics/evaluate/{k}.json")[k] for k in MODELS}
    d = {k: read(f"plots/evaluate/{k}/details.json")["metrics"] for k in MODELS}
    lora = read("params.yaml")["train"]["lora"]
    n, pos = int(d["base"]["n_pairs"]), int(d["base"]["n_positives"])
    header = [f"metric (eval, {n} pairs)", "base", f"full ({_lr_note(read, 'full')})",
              f"LoRA (r={lora['r']}, {'/'.join(lora['target_modules'])}, {_lr_note(read, 'lora')})"]
    rows = [
        ["Spearman", *(_ci(d[k]["spearman"], d[k]["spearman_ci_low"], d[k]["spearman_ci_high"]) for k in MODELS)],
        ["AUC-ROC", *(_ci(m[k]["auc"], m[k]["auc_low"], m[k]["auc_high"]) for k in MODELS)],
        ["similarity margin (pos - neg)", *(_f(m[k]["margin"]) for k in MODELS)],
        ["Cohen's d", *(_f(m[k]["cohens_d"], 2) for k in MODELS)],
        ["F1 at the dev threshold", *(_ci(d[k]["f1"], d[k]["f1_ci_low"], d[k]["f1_ci_high"]) for k in MODELS)],
        [f"cluster purity (chance {_f(d['base'].get('cluster_chance', float('nan')))}; median "
         f"[lowest, highest] of {int(d['base'].get('cluster_seeds', 1))} UMAP seeds)",
         *(_purity(m[k], d[k]) for k in MODELS)],
        [f"false positives at the dev threshold (of {n - pos})", *(int(m[k]["fp"]) for k in MODELS)],
    ]
    cats = {k: read(f"plots/evaluate/{k}/details.json").get("by_category") or {} for k in MODELS}
    if all(cats.values()):  # the eighth: the per-category breakdown, here its weakest category by AUC
        def worst(k: str) -> str:
            name, c = min(cats[k].items(), key=lambda kv: (kv[1]["auc"], kv[0]))
            return f"{_f(c['auc'])} ({name})"
        rows.append([f"per-category breakdown: the weakest of {len(cats['base'])} categories' AUC",
                     *(worst(k) for k in MODELS)])
    return _table(header, rows)


def training(read: Read) -> str:
    """What each mode trained, what it weighs, what it took (train_s: the loop; search_s: its lr search)."""
    rows = []
    for mode in MODES:
        live = read(f"dvclive/train_{mode}/train.json")
        cost = read(f"metrics/train/{mode}.json")[mode]
        tune = read(f"metrics/tune/{mode}.json")[mode]
        search = f"{tune['search_s']:.1f} s" if tune.get("trials") else "none (lr set)"
        rows.append([MODE_TITLE[mode], f"{live['trainable_params']:,} ({100 * live['trainable_share']:.2f}%)",
                     f"{cost['mb']:.2f} MB", int(live["steps"]), f"{cost['train_s']:.1f} s", search])
    machine = read("dvclive/train_lora/train.json")["machine"]
    return _table(["mode", "trainable params", "artifact", "steps", "wall time", "its lr search"], rows) + \
        f"\nMachine: {machine}.\n"


def verdict(read: Read) -> str:
    """Paired bootstrap differences on eval (the report's verdict)."""
    r = read("metrics/report.json")
    rows = []
    for a, b in (("full", "base"), ("lora", "base"), ("lora", "full")):
        k = f"{a}_vs_{b}"
        rows.append([f"{MODE_TITLE[a]} - {MODE_TITLE[b]}",
                     _signed_ci(r[f"{k}_auc_diff"], r[f"{k}_auc_diff_ci_low"], r[f"{k}_auc_diff_ci_high"]),
                     _signed_ci(r[f"{k}_spearman_diff"], r[f"{k}_spearman_diff_ci_low"],
                                r[f"{k}_spearman_diff_ci_high"])])
    share = r["lora_share_of_full_gain_auc"]
    out = _table(["eval, paired bootstrap", "AUC difference [95% CI]", "Spearman difference [95% CI]"], rows) + \
        f"\nLoRA's share of full fine-tuning's AUC gain over the base: {100 * share:.1f}%.\n"
    if "op_full_alpha" not in r:
        return out
    # Both axes at each method's operating point (alpha chosen on dev + general): the report's second verdict.
    it = {m: read(f"metrics/interpolate/{m}.json") for m in MODES}
    op = [["alpha (chosen on dev + general)", _f(r["op_full_alpha"], 1), _f(r["op_lora_alpha"], 1), ""]]
    for key, name in (("auc", "eval AUC"), ("spearman", "eval Spearman")):
        op.append([name, _f(r[f"op_full_{key}"]), _f(r[f"op_lora_{key}"]),
                   _signed_ci(*(r[f"op_lora_vs_full_{key}_diff{s}"] for s in ("", "_ci_low", "_ci_high")))])
    if "op_lora_vs_full_retention_diff" in r:
        op.append(["general retention (Spearman / base's)",
                   *(_ci(it[m]["retention"], it[m]["retention_ci_low"], it[m]["retention_ci_high"], 2) for m in MODES),
                   _signed_ci(*(r[f"op_lora_vs_full_retention_diff{s}"] for s in ("", "_ci_low", "_ci_high")), 2)])
    return out + "\n" + _table(["at each method's operating point", "full", "LoRA", "LoRA - full [95% CI]"], op)


def interpolation(read: Read) -> str:
    """Each alpha of the grid: dev AUC and general Spearman (retention), both modes."""
    curves = {m: read(f"plots/interpolate/{m}/curve.json") for m in MODES}
    chosen = {m: read(f"metrics/interpolate/{m}.json")["alpha"] for m in MODES}
    rows = []
    by = {m: {p["alpha"]: p for p in curves[m]} for m in MODES}
    for alpha in sorted(set().union(*by.values())):
        cells = [_f(alpha, 1)]
        for m in MODES:
            p = by[m].get(alpha)
            if p is None:  # interpolate.search: descend scores only the points the choice can depend on
                cells += ["not scored", ""]
                continue
            mark = " **(chosen)**" if abs(p["alpha"] - chosen[m]) < 1e-9 else ""
            general = f"{_f(p['general_spearman'])} ({100 * p['retention']:.0f}%){mark}" \
                if p.get("general_spearman") is not None else "n/a"
            cells += [_f(p["dev_auc"], 4), general]
        rows.append(cells)
    return _table(["alpha", "full: dev AUC", "full: general Spearman (retention)", "LoRA: dev AUC",
                   "LoRA: general Spearman (retention)"], rows)


def interpolation_choice(read: Read) -> str:
    """The tuned model (alpha 1) against the chosen alpha: eval AUC and general retention."""
    header, auc, ret = [""], ["eval AUC"], ["general retention"]
    for m in MODES:
        e = read(f"metrics/evaluate/{m}.json")[m]
        i = read(f"metrics/interpolate/{m}.json")
        header += [f"{MODE_TITLE[m]} (alpha 1)", f"{MODE_TITLE[m]}, chosen alpha {_f(i['alpha'], 1)}"]
        auc += [_ci(e["auc"], e["auc_low"], e["auc_high"]),
                _ci(i["eval_auc"], i["eval_auc_ci_low"], i["eval_auc_ci_high"])]
        if i.get("general"):
            ret += [_ci(i["retention_tuned"], i["retention_tuned_ci_low"], i["retention_tuned_ci_high"], 2),
                    _ci(i["retention"], i["retention_ci_low"], i["retention_ci_high"], 2)]
        else:
            ret += ["n/a", "n/a"]
    return _table(header, [auc, ret])


def exports(read: Read) -> str:
    """What each export folder shipped, and its checks against the pipeline's model."""
    rows = []
    for m in MODES:
        e = read(f"metrics/export/{m}.json")
        status = e["status"]
        rows.append([
            MODE_TITLE[m], ", ".join(f"{k} {v}" for k, v in status.items()),
            _f(e["onnx_auc"], 4) if "onnx_auc" in e else "n/a",
            f"{e.get('int8_method', 'n/a')}: {e['int8_auc_delta']:.4f} / {e['int8_spearman_delta']:.4f}"
            if "int8_auc_delta" in e else "n/a",
            f"{_f(e['threshold'], 4)} / {_f(e['threshold_int8'], 4)}" if "threshold_int8" in e
            else _f(e["threshold"], 4),
            f"{e['bytes_standalone'] / 1e6:.1f} / {e.get('bytes_onnx', 0) / 1e6:.1f} / "
            f"{e.get('bytes_int8', 0) / 1e6:.1f} MB",
        ])
    return _table(["mode", "variants", "ONNX fp32 eval AUC", "int8 method: eval AUC / Spearman delta",
                   "dev threshold fp32 / int8", "standalone / ONNX / int8"], rows)


def lr_check(read: Read) -> str:
    """bench/tune.json: the search's choice at two seeds against a full-length sweep of its grid."""
    b = read("bench/tune.json")
    rows = []
    for key, search in sorted(b["searches_default"].items()):
        mode, _, seed = key.partition("_s")
        if mode not in MODES or not seed.isdigit():  # other entries: stage wall times, the tune params
            continue
        sweep = {v["lr"]: v for v in b["sweep"].values() if v["mode"] == mode and str(v["seed"]) == seed}
        best = max(sweep.values(), key=lambda v: v["eval_auc"])
        chosen = sweep[search["chosen_lr"]]
        every = ", ".join(f"{_lr(lr)} {v['eval_auc']:.4f}" for lr, v in sorted(sweep.items()))
        rows.append([f"{MODE_TITLE[mode]}, {seed}", _lr(search["chosen_lr"]), f"{chosen['eval_auc']:.4f}",
                     f"{_lr(best['lr'])}: {best['eval_auc']:.4f} [{best['eval_auc_ci'][0]:.4f}, "
                     f"{best['eval_auc_ci'][1]:.4f}]", every, f"{search['search_s']:.1f} s"])
    return _table(["mode, seed", "chosen on dev", "its eval AUC", "sweep's best on eval [95% CI]",
                   "eval AUC at each candidate", "search (in-process)"], rows) + \
        f"\n{b['machine']}, {b['date']}.\n"


QUANT_WHAT = {
    "dynamic": "int8 weights of every MatMul and the embedding, activations quantised per input (one text a run)",
    "dynamic_ffn_fp32": "the same, feed-forward output MatMuls (after GELU) left fp32",
    "static_ffn_fp32": "QDQ, activation ranges calibrated on 256 dev texts, FFN output fp32",
    "static": "QDQ on every MatMul",
    "weight_only": "8-bit weights in blocks of 32 (MatMulNBits), fp32 activations",
}


def quant(read: Read) -> str:
    """bench/quant.json: each int8 recipe's worst quality delta over the models, and its speed."""
    b = read("bench/quant.json")
    speed, models = b["speed"], b["models"]
    fp32 = speed["fp32"]["texts_per_s"]
    first = next(iter(models.values()))
    rows = [["(ONNX fp32)", "", "", f"{fp32:.0f} (x1.00)", f"{speed['fp32']['latency_ms_p50']:.2f} ms",
             f"{first['bytes_fp32'] / 1e6:.1f} MB"]]
    for method, what in QUANT_WHAT.items():
        seen = [m[method] for m in models.values() if method in m and "eval_auc_delta" in m[method]]
        worst = (f"{max(s['eval_auc_delta'] for s in seen):.4f} / {max(s['eval_spearman_delta'] for s in seen):.4f}"
                 + (f" ({len(seen)} models)" if len(seen) != len(models) else ""))
        s = speed.get(method)
        rows.append([f"`{method}`", what, worst, f"{s['texts_per_s']:.0f} (x{s['texts_per_s'] / fp32:.2f})" if s
                     else "", f"{s['latency_ms_p50']:.2f} ms" if s else "",
                     f"{first[method]['bytes'] / 1e6:.1f} MB" if method in first else ""])
    return _table(["method", "what", "worst eval AUC / Spearman delta", f"texts/s ({b['speed_texts']} texts)",
                   "one text, p50", "file"], rows) + f"\n{len(models)} models; {b['machine']}, {b['date']}.\n"


def operating(read: Read) -> str:
    """bench/operating.json: per dataset, every learning rate of the search grid trained at full length and
    interpolated on the whole alpha grid, against the search's short trials and the pipeline's (lr, alpha)
    operating point; the descending alpha search replayed on each curve."""
    runs = read("bench/operating.json")["runs"]
    rows, notes, checks = [], [], []
    for label, run in runs.items():
        for mode, m in run["modes"].items():
            pipe, joint = m["pipeline"], m["joint"]
            for r in m["per_lr"]:
                marks = [w for w, hit in (("past the grid", r["lr"] in m.get("extended", [])),
                                          ("search", r["lr"] == pipe["lr"]), ("joint", r["lr"] == joint["lr"])) if hit]
                ci, d = r["retention_at_chosen_ci"], r.get("descend")
                if d:
                    checks.append(d)
                rows.append([label, MODE_TITLE[mode], _lr(r["lr"]) + (f" ({', '.join(marks)})" if marks else ""),
                             _f(r["trial_dev_auc"], 3) if r["trial_dev_auc"] is not None else "",
                             f"{_f(r['dev_auc_alpha1'])} / {_f(r['retention_alpha1'], 2)}",
                             f"{r['chosen_alpha']:g}: {_f(r['dev_auc_at_chosen'])} / {_f(r['eval_auc_at_chosen'])}",
                             _ci(r["retention_at_chosen"], ci[0], ci[1], 2),
                             (f"{d['alpha']:g}, {d['scored']} of {d['grid_points']}" + ("" if d["same"] else " (differs)"))
                             if d else "not recorded"])
            notes.append(f"- {label}, {MODE_TITLE[mode]}: " + _operating_note(m))
    same = sum(c["same"] for c in checks)
    scored, points = sum(c["scored"] for c in checks), sum(c["grid_points"] for c in checks)
    first = next(iter(runs.values()))
    seeds = ", ".join(f"{run['seed']} ({label})" for label, run in runs.items())
    return (_table(["data", "method", "lr", "trial dev AUC", "alpha 1: dev AUC / retention",
                    "chosen alpha: dev / eval AUC", "retention there", "descend: alpha, points scored"], rows)
            + "\n" + "\n".join(notes)
            + f"\n\nThe descending search chose the whole grid's alpha on {same} of {len(checks)} curves, scoring {scored} "
            f"of {points} grid points. Rule: {first['rule']}; training seed: {seeds}; {first['machine']}; "
            f"{', '.join(sorted({r['date'] for r in runs.values()}))}.\n")


def _where(v: float, lo: float, hi: float) -> str:
    """Where a figure lies against an interval: inside, above or below."""
    return "inside" if lo <= v <= hi else "above" if v > hi else "below"


def _operating_note(m: dict[str, Any]) -> str:
    """The pipeline's operating point against the joint (lr x alpha) pick, and what the search cost."""
    pipe, joint = m["pipeline"], m["joint"]
    text = (f"trials rank the rates {', '.join(map(_lr, m['trial_order']))} (best first), full-length training "
            f"{', '.join(map(_lr, m['full_length_order']))}. Pipeline: lr {_lr(pipe['lr'])}, alpha {pipe['alpha']:g}, "
            f"eval AUC {_f(pipe['eval_auc'])}, retention {_f(pipe['retention'], 2)}; the rule over every (lr, alpha): "
            f"lr {_lr(joint['lr'])}, alpha {joint['alpha']:g}")
    if "eval_auc_ci" in joint:
        (elo, ehi), (rlo, rhi) = joint["eval_auc_ci"], joint["retention_ci"]
        where = {"eval AUC": _where(pipe["eval_auc"], elo, ehi), "retention": _where(pipe["retention"], rlo, rhi)}
        verdict = ("inside both intervals" if set(where.values()) == {"inside"} else
                   "; ".join(f"{w} on {axis}" for axis, w in where.items()))
        text += (f", eval AUC {_ci(joint['eval_auc'], elo, ehi)}, retention {_ci(joint['retention'], rlo, rhi, 2)}: "
                 f"the pipeline's point is {verdict}")
    elif "retention_ci" in pipe:  # the joint point's interval is not known: is it inside the pipeline's?
        rlo, rhi = pipe["retention_ci"]
        text += (f", retention {_f(joint['retention'], 2)}, "
                 f"{'inside' if rlo <= joint['retention'] <= rhi else 'outside'} the pipeline's retention interval "
                 f"[{_f(rlo, 2)}, {_f(rhi, 2)}] (no eval AUC interval recorded for it)")
    own = next((r["train_s"] for r in m["per_lr"] if r["lr"] == pipe["lr"] and "train_s" in r), None)
    if "search_s" in m and own:
        # against the bench's own training of the chosen rate (a train stage process, timed alone): the
        # pipeline's train_s may come from a run that shared the cores
        text += (f". The search cost {m['search_s'] / own:.2f} of a training run ({m['search_s']:.0f} s against "
                 f"{own:.0f} s for a train stage process at that rate, imports included)")
    elif "search_s" in m and "train_s" in pipe:
        text += f". The search cost {m['search_s'] / pipe['train_s']:.2f} of a training run ({m['search_s']:.0f} s)"
    return text + "."


def seeds(read: Read) -> str:
    """bench/seeds.json: the operating-point verdict at one training seed and at N, on the same committed run."""
    b = read("bench/seeds.json")
    rows = []
    for label, fig in (("1 (seeds.n 1: eval / general pairs resampled)", b["one"]),
                       (f"{b['n']} (seeds.n {b['n']}: seeds and pairs resampled)", b["many"])):
        cell = {k: (_ci(*v, digits=2 if "retention" in k else 3) if "diff" not in k else
                    _signed_ci(*v, digits=2 if "retention" in k else 3)) for k, v in fig.items()
                if k != "seeds" and None not in v}
        rows.append([label, cell.get("full_auc", "n/a"), cell.get("lora_auc", "n/a"), cell.get("diff_auc", "n/a"),
                     cell.get("full_retention", "n/a"), cell.get("lora_retention", "n/a"),
                     cell.get("diff_retention", "n/a")])
    per = []
    for m in ("full", "lora"):
        pts = [{"seed": b["seeds"][0], **b["pipeline_seed"][m]}] + b["per_seed"][m]
        per.append(f"{MODE_TITLE[m]} (lr {_lr(b['lr'][m])}, alpha {b['alpha'][m]:g}): "
                   + ", ".join(f"seed {p['seed']} {_f(p['eval_auc'])} / {_f(p['retention'], 2)}" for p in pts))
    cost = ", ".join(f"{MODE_TITLE[m]} {b['seeds_stage_s'][m]:.0f} s ({b['seeds_stage_s'][m] / b['train_s'][m]:.1f} "
                     f"training runs)" for m in ("full", "lora"))
    return (_table(["training seeds", "full: eval AUC", "LoRA: eval AUC", "LoRA - full: AUC", "full: retention",
                    "LoRA: retention", "LoRA - full: retention"], rows)
            + "\nEach seed's eval AUC / retention at its method's operating point: " + "; ".join(per)
            + f". The {b['n'] - 1} extra seeds cost {cost}. {b['machine']}; {b['date']}.\n")


def methods(read: Read) -> str:
    """bench/methods.json: every shipped method at its own operating point, per dataset (#36)."""
    rows, notes = [], []
    for label, run in read("bench/methods.json")["runs"].items():
        # full (the reference) and LoRA first, as the report lists them; the data's label once a group
        for i, (m, r) in enumerate(sorted(run["methods"].items(), key=lambda kv: (kv[0] != "full", kv[0] != "lora",
                                                                                kv[0]))):
            minus = {k: _signed_ci(*r[f"minus_full_{k}"], digits=3 if k == "auc" else 2)
                     for k in ("auc", "retention") if f"minus_full_{k}" in r}
            lr = _lr(r["lr"]) + (f" (search: {_lr(r['searched_lr'])}, came apart)" if "searched_lr" in r else "")
            rows.append([label if i == 0 else "", f"{m} ({r['kind']})", f"{lr}, {r['alpha']:g}",
                         _ci(r["eval_auc"], *r["eval_auc_ci"]),
                         _ci(r["retention"], *r["retention_ci"], digits=2) if "retention" in r else "n/a",
                         minus.get("auc", ""), minus.get("retention", ""),
                         f"{r['artifact_bytes'] / 1e6:.2f} MB ({r['trainable_params']:,})",
                         f"{r['search_s']:.0f} + {r['train_s']:.0f} s"])
        notes.append(f"- {label}: {run['machine']}; {run['date']}, commit {run['commit']}; its `dvc repro` "
                     f"ran {len(run['stages_run'])} stages in {run['repro_s'] / 60:.0f} min")
        again = {(r["commit"], r["date"]): [m for m, q in run["methods"].items() if q.get("commit") == r["commit"]]
                 for r in run["methods"].values() if "commit" in r}
        notes += [f"  - rerun at commit {c} ({d}): {', '.join(ms)}" for (c, d), ms in again.items()]
    return (_table(["data", "method (kind)", "lr, alpha", "eval AUC [95% CI]", "general retention [95% CI]",
                    "minus full: AUC", "minus full: retention", "size (trainable params)", "search + training"],
                   rows) + "\n" + "\n".join(notes) + "\n")


def bench(read: Read) -> str:
    """bench/results.json: pairtune's training against the plain sentence-transformers script, per machine."""
    machines = read("bench/results.json")["machines"]
    rows = []
    for kind, m in machines.items():
        for mode, t in m.get("training", {}).items():
            ref, ours = t["median"]["reference"], t["median"]["pairtune"]
            rows.append([kind, MODE_TITLE[mode], f"{ref['wall_s']:.1f} s", f"{ours['wall_s']:.1f} s",
                         f"**{t['speedup']:.2f}x**", f"{ref['auc']:.4f} -> {ours['auc']:.4f}",
                         f"{ref['peak_rss_mb']:.0f} -> {ours['peak_rss_mb']:.0f} MB", m.get("runs", "")])
    table = _table(["machine kind", "mode", "reference (fp32)", "pairtune", "speed-up", "eval AUC", "peak RSS",
                    "runs"], rows)
    names = "\n".join(f"- `{k}`: {_machine_line(m)}" for k, m in machines.items())
    return table + "\n" + names + "\n"


def bench_pipeline(read: Read) -> str:
    """bench/results.json: the whole pipeline in a clean clone, per machine."""
    machines = read("bench/results.json")["machines"]
    rows = [[kind, f"{p['end_to_end_repro_s']:.0f} s", f"{p['noop_repro_s']:.2f} s", f"{p['evaluate_stage_s']:.1f} s",
             f"{p['peak_stage_rss_mb']:.0f} MB"] for kind, m in machines.items() if (p := m.get("pipeline"))]
    return _table(["machine kind", "`dvc repro --force`, clean clone", "no-op `dvc repro`", "evaluate stage",
                   "peak stage RSS"], rows)


def _machine_line(m: dict) -> str:
    info = m["machine"]
    isa = " ".join(f"{a}={b}" for a, b in info.get("isa_env", {}).items())
    return f"{info['machine']}, {info['cores']} cores" + (f", restricted with {isa}" if isa else "")


def _with(read: Read, section: str) -> list[tuple[str, dict]]:
    return [(k, m) for k, m in read("bench/results.json")["machines"].items() if section in m]


def inference(read: Read) -> str:
    """bench/results.json `inference`: the export served three ways (make bench BENCH_ARGS=--inference)."""
    out = []
    names = {"onnx_fp32": "ONNX fp32 (onnxruntime)", "onnx_int8": "ONNX int8 (onnxruntime)",
             "torch_fp32": "PyTorch fp32 (`SentenceTransformer.encode`)"}
    for kind, m in _with(read, "inference"):
        inf = m["inference"]
        torch_rate = inf["backends"]["torch_fp32"]["texts_per_s"]
        rows = [[names.get(b, b), f"{v['texts_per_s']:.0f} (x{v['texts_per_s'] / torch_rate:.2f})",
                 f"{v['latency_ms_p50']:.1f} ms", f"{v['latency_ms_p90']:.1f} ms", f"{v['bytes'] / 1e6:.1f} MB"]
                for b, v in inf["backends"].items()]
        out.append(f"`{kind}` ({_machine_line(m)}; `{inf['model']}`, {inf['texts']} texts, {inf['rounds']} rounds, "
                   f"medians):\n\n" + _table(["backend", "texts/s at batch 64", "one text, p50", "one text, p90",
                                                "model file"], rows))
    return "\n".join(out)


def ddp(read: Read) -> str:
    """bench/results.json `ddp`: the train stage with 1 and 2 processes (make bench BENCH_ARGS=--ddp)."""
    rows = []
    for kind, m in _with(read, "ddp"):
        for mode, v in m["ddp"].items():
            one, two = v["median"]["1"], v["median"]["2"]
            rows.append([kind, MODE_TITLE[mode], f"{one['stage_s']:.1f} s ({one['train_s']:.1f} s)",
                         f"{two['stage_s']:.1f} s ({two['train_s']:.1f} s)", f"x{one['stage_s'] / two['stage_s']:.2f}",
                         f"{one['auc']:.4f} / {two['auc']:.4f}"])
    return _table(["machine kind", "mode", "1 process: stage (trainer)", "2 processes: stage (trainer)",
                   "speed-up", "eval AUC 1 / 2 processes"], rows)


def scale(read: Read) -> str:
    """bench/results.json `scale`: every stage alone at 10x and 100x the demo data (bench/run.py --scale)."""
    out = []
    for kind, m in _with(read, "scale"):
        sc = m["scale"]
        lo, hi = (str(f) for f in sc["factors"])
        a, b = sc["runs"][lo]["stages"], sc["runs"][hi]["stages"]
        rows = [[f"`{st}`", f"{a[st]['wall_s']:.1f} s / {a[st]['peak_rss_mb']:.0f} MB",
                 f"{b[st]['wall_s']:.1f} s / {b[st]['peak_rss_mb']:.0f} MB", f"x{sc['growth'][st]:.1f}"]
                for st in sorted(a, key=lambda st: STAGE_ORDER.index(st.split("@")[0]))]
        out.append(f"`{kind}` ({_machine_line(m)}; training capped at {sc['max_steps']} steps):\n\n"
                   + _table(["stage", f"{lo}x: time / peak RSS", f"{hi}x: time / peak RSS", "time growth"], rows))
    return "\n".join(out)


def ablation(read: Read) -> str:
    """bench/results.json `ablation`: pairtune with each speed knob off in turn (bench/run.py --ablation)."""
    out = []
    for kind, m in _with(read, "ablation"):
        ab = m["ablation"]
        modes = [x for x in MODES if x in ab]
        knobs = [k for k in ab[modes[0]]["median"] if k != "all on"]
        header = ["knob off"] + [f"{MODE_TITLE[x]} (all on: {ab[x]['median']['all on']['wall_s']:.1f} s)" for x in modes]
        rows = [[k] + [f"{ab[x]['median'][k]['wall_s']:.1f} s (x{ab[x]['median'][k]['wall_s'] / ab[x]['median']['all on']['wall_s']:.2f})"
                       if k in ab[x]["median"] else "" for x in modes] for k in knobs]
        runs = len(ab[modes[0]]["raw"]["all on"])
        out.append(f"`{kind}` ({_machine_line(m)}; {runs} run(s) each, medians):\n\n" + _table(header, rows))
    return "\n".join(out)


def families_cost(read: Read) -> str:
    """bench/families.json: seconds a training step, the default base against a ~5x larger MPNet stand-in."""
    b = read("bench/families.json")
    rows, base = [], None
    for name, m in b["models"].items():
        step = m["s_per_step"]
        base = base or step
        rows.append([name, f"{m['parameters'] / 1e6:.1f}M", m["model_type"],
                     f"{step['full']:.2f} s (x{step['full'] / base['full']:.1f})",
                     f"{step['lora']:.2f} s (x{step['lora'] / base['lora']:.1f})",
                     f"~{step['full'] * 372 / 60:.0f} / ~{step['lora'] * 372 / 60:.0f} min"])
    return _table(["base model", "parameters", "model type", "full: a step", "LoRA: a step",
                   "372 steps (the demo run): full / LoRA"], rows) + \
        f"\n{b['machine']}; {b['steps']} steps a run, {b['runs']} runs alternating, medians.\n"


TURN_SIDES = (("before", "before"), ("after", "after cold"), ("warm", "after warm"))


def _turn_kinds(read: Read) -> list[tuple[str, dict]]:
    return list(read("bench/turnaround.json")["machines"].items())


def turnaround(read: Read) -> str:
    """bench/turnaround.json: each stage's seconds besides training, before / after / after warm, per machine."""
    kinds = _turn_kinds(read)
    first = kinds[0][1]
    header = ["stage"] + [f"{kind}: {' / '.join(label for side, label in TURN_SIDES if side in m)}"
                          for kind, m in kinds]
    rows = []
    measured = first["after"]["stages"]
    known = [s for s in measured if s.split("@")[0] in STAGE_ORDER]
    for stage in sorted(known, key=lambda s: STAGE_ORDER.index(s.split("@")[0])) + [s for s in measured
                                                                                    if s not in known]:
        rows.append([f"`{stage}`"] + [" / ".join(f"{m[side]['stages'][stage]['other_s']:.1f}" for side, _ in TURN_SIDES
                                                 if side in m) for _, m in kinds])
    for key, label in (("lora_experiment_besides_training_s",
                        "**a LoRA experiment besides training** (evaluate@lora, interpolate@lora, export@lora, report)"),
                       ("lora_experiment_other_s", "**a LoRA experiment** (tune@lora ... report)"),
                       ("clean_repro_other_s", "**a clean repro** (every stage)")):
        if all(key in m[side]["totals"] for _, m in kinds for side, _ in TURN_SIDES if side in m):
            rows.append([label] + [" / ".join(f"**{m[side]['totals'][key]:.1f}**" for side, _ in TURN_SIDES
                                              if side in m) for _, m in kinds])
    notes = "\n".join(f"- `{kind}`: {_machine_line(m)}; " + ", ".join(
        f"{side} = {m[side]['commit']}" for side, _ in TURN_SIDES if side in m and side != "warm")
        + f"; {m['runs']} run(s) a stage (tune and train: {m['train_runs']}), medians; {m['date']}" for kind, m in kinds)
    return _table(header, rows) + "\n" + notes + "\n"


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


def first_run(read: Read) -> str:
    """bench/first_run.json: a fresh clone's `make install` + `make repro`, per machine kind."""
    rows, notes = [], []
    for kind, m in read("bench/first_run.json")["machines"].items():
        t = m["training_s"]
        trained = sum(t.values())
        rows.append([kind, f"**{_mmss(m['wall_s'])}**", f"{m['install_s']:.0f} s", f"{m['repro_s']:.0f} s",
                     f"{trained:.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + ")",
                     f"{m['repro_s'] - trained:.0f} s", f"{m['peak_rss_mb_largest_process'] / 1024:.2f} GB",
                     "yes" if m["outputs_equal_to_lock"] else f"no: {len(m['outputs_differing'])} outputs differ"])
        chose = "; ".join(f"{mode} lr {c['lr']:.2g}, alpha {c['alpha']:g}" for mode, c in m.get("chosen", {}).items())
        runs = len(m.get("runs", [])) or 1
        notes.append(f"- `{kind}`: {_machine_line(m)}; commit {m['commit']}, {m['date']}; "
                     + (f"medians of {runs} runs (the kinds alternating)" if runs > 1 else "one run")
                     + (f"; chose {chose}" if chose else ""))
    return (_table(["machine kind", "first run", "make install", "make repro", "of which training and search",
                    "the other stages", "peak RSS (largest process)", "outputs = dvc.lock"], rows)
            + "\n" + "\n".join(notes) + "\n")


PIPELINE_ORDER = ("generate", "prepare", "base", "tune", "train", "evaluate", "interpolate", "export", "seeds",
                  "report")  # dvc.yaml's stages, in the order `dvc repro` runs them
STAGE_ITEM_ORDER = {"": 0, "base": 0, "full": 1, "lora": 2}


def first_run_stages(read: Read) -> str:
    """bench/first_run.json: each stage's wall seconds in the first `make repro`, per machine kind (medians)."""
    kinds = {k: m for k, m in read("bench/first_run.json")["machines"].items() if m.get("stages_s")}
    def place(stage: str) -> tuple[int, int, str]:  # the file's keys are sorted; the table runs as the pipeline
        name, _, item = stage.partition("@")
        return (PIPELINE_ORDER.index(name) if name in PIPELINE_ORDER else len(PIPELINE_ORDER),
                STAGE_ITEM_ORDER.get(item, len(STAGE_ITEM_ORDER)), stage)

    stages = sorted(dict.fromkeys(s for m in kinds.values() for s in m["stages_s"]), key=place)
    rows = [[f"`{s}`", *(f"{m['stages_s'][s]:.1f}" if s in m["stages_s"] else "-" for m in kinds.values())]
            for s in stages]
    rows.append(["**all stages**", *(f"**{sum(m['stages_s'].values()):.0f}**" for m in kinds.values())])
    return _table(["stage", *(f"{k} (s)" for k in kinds)], rows)


def first_run_readme(read: Read) -> str:
    """The README's one sentence: the first run's time and memory, on each CPU kind measured."""
    parts = []
    for kind, m in read("bench/first_run.json")["machines"].items():
        where = (f"on a shared 2-core {m['machine']['cpu']} (flags: {' '.join(m['machine']['flags'])})"
                 + (" capped to AVX2 (as a CPU without native bf16)" if m["machine"].get("isa_env") else
                    " with native bf16"))
        parts.append(f"**{_mmss(m['wall_s'])}** {where} (peak {m['peak_rss_mb_largest_process'] / 1024:.2f} GB, "
                     f"the largest process)")
    first = next(iter(read("bench/first_run.json")["machines"].values()))
    return (f"The first `make repro` on a fresh clone (creating the venv, pip's download cache already warm, then "
            f"every stage) took {'; '.join(parts)}, {first['date']} (`bench/first_run.json`; per CPU kind in "
            f"[performance](docs/performance.md#first-run)). The venv is {first['venv_gb']:.1f} GB of disk.\n")


def turnaround_fixed(read: Read) -> str:
    """bench/turnaround.json: the fixed costs alone, `pairtune score`, and whole `dvc exp run`s, per machine."""
    rows = []
    for kind, m in _turn_kinds(read):
        for name in m["after"]["fixed_s"]:
            rows.append([kind, name] + [f"{m[side]['fixed_s'][name]:.2f} s" if m[side].get("fixed_s") else "-"
                                        for side in ("before", "after") if side in m])
        for side, label in TURN_SIDES:
            if "experiment" in m.get(side, {}):
                e = m[side]["experiment"]
                rows.append([kind, f"`dvc exp run -S train.lora.r={e['r']}`, {label}: wall / training",
                             f"{e['wall_s']:.1f} s / {e['training_s']:.1f} s", f"**{e['other_s']:.1f} s** besides"])
    return _table(["machine kind", "what", "before", "after"], rows)


# ---------------------------------------------------------------- params reference (params.yaml and its comments)

KEY = re.compile(r"^(?P<indent> *)(?P<key>[\w]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def params_entries(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, value as written, comment) for every key of params.yaml, continuation comments joined."""
    entries: list[list[str]] = []
    stack: list[tuple[int, str]] = []
    last_col = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            last_col = None
            continue
        if stripped.startswith("#"):
            col = line.index("#")
            if entries and last_col is not None and col == last_col:  # a comment continued on the next line
                entries[-1][2] = f"{entries[-1][2]} {stripped.lstrip('#').strip()}".strip()
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, m["key"]))
        dotted = ".".join(k for _, k in stack)
        entries.append([dotted, m["value"].strip(), (m["comment"] or "").strip()])
        last_col = line.index("#") if m["comment"] is not None else None
    return [tuple(e) for e in entries]  # type: ignore[misc]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def params_reference(read: Read) -> str:
    """Every key of params.yaml with its default and its comment, one table a section."""
    entries = params_entries(read("params.yaml#text"))
    sections = {key for key, value, _ in entries if "." not in key and not value}
    out, section = [], None
    for key, value, comment in entries:
        top = key.split(".")[0] if key.split(".")[0] in sections else "(top level)"
        if top != section:
            section = top
            out.append(f"\n### `{top}`\n" if top in sections else f"\n### {top}\n")
            if key == top and comment:
                out.append(f"{comment}\n")
            out.append("| key | default | what it does |\n| --- | --- | --- |")
        if key == top:
            continue
        shown = f"`{_cell(value)}`" if value else ""
        out.append(f"| `{key}` | {shown} | {_cell(comment)} |")
    return "\n".join(out).lstrip("\n") + "\n"


TABLES: dict[str, Callable[[Read], str]] = {
    "results": results, "training": training, "verdict": verdict, "interpolation": interpolation,
    "interpolation-choice": interpolation_choice, "exports": exports, "lr-check": lr_check, "quant": quant,
    "operating": operating, "seeds": seeds, "methods": methods,
    "bench": bench, "bench-pipeline": bench_pipeline, "inference": inference, "ddp": ddp, "scale": scale,
    "ablation": ablation, "families-cost": families_cost, "params": params_reference,
    "turnaround": turnaround, "turnaround-fixed": turnaround_fixed, "first-run": first_run,
    "first-run-stages": first_run_stages,
    "first-run-readme": first_run_readme,
}


# ---------------------------------------------------------------- reading, rendering, checking


def _reader(root: Path, used: list[str]) -> Read:
    def read(rel: str) -> Any:
        as_text = rel.endswith("#text")
        rel = rel.removesuffix("#text")
        if rel not in used:
            used.append(rel)
        text = (root / rel).read_text()
        if as_text:
            return text
        return YAML(typ="safe").load(text) if rel.endswith(".yaml") else json.loads(text)
    return read


def render(root: Path, name: str, outs: dict[str, str] | None = None) -> tuple[str, list[Source]]:
    """A table's text and the sources it read (FileNotFoundError if one is missing)."""
    outs = _lock_outs(root) if outs is None else outs
    used: list[str] = []
    body = TABLES[name](_reader(root, used))
    return body, [resolve(root, rel, outs) for rel in used]


def block(name: str, body: str, sources: list[Source]) -> str:
    refs = " ".join(f"{s.path}={s.committed}" for s in sources)
    return f"<!-- table: {name} | {refs} -->\n{body}<!-- /table -->\n"


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _malformed(path: Path, root: Path, text: str) -> None:
    """A `<!-- table:` opening that MARKER does not read (e.g. `<!-- table: x | -->`) would be skipped in
    silence, its table never filled: refuse it."""
    for opening in re.finditer(r"^<!-- table:.*$", text, re.M):
        if not MARKER.match(text, opening.start()):
            line = text.count("\n", 0, opening.start()) + 1
            raise StaleTable(f"{path.relative_to(root)}:{line}: a table marker not read as one: {opening[0]!r} "
                             "(write `<!-- table: NAME -->`, the table, then `<!-- /table -->` on its own line)")


def update(root: Path) -> list[str]:
    """Regenerate every marked table in README.md and docs/; return the files changed. Refuses stale sources."""
    outs, changed = _lock_outs(root), []
    for path in doc_files(root):
        text = path.read_text()
        _malformed(path, root, text)

        def fill(m: re.Match) -> str:
            try:
                body, sources = render(root, m["name"], outs)
            except FileNotFoundError as err:
                raise StaleTable(f"{path.relative_to(root)}: table {m['name']!r}: {err.filename} is missing "
                                 "(run `dvc pull` or `make repro` first)") from None
            stale = [s.path for s in sources if not s.present]
            if stale:
                raise StaleTable(f"{path.relative_to(root)}: table {m['name']!r}: {', '.join(stale)} missing or not "
                                 "the version dvc.lock records (run `dvc pull` or `make repro` first)")
            return block(m["name"], body, sources)

        new = MARKER.sub(fill, text)
        if new != text:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed


def check(root: Path) -> tuple[int, int]:
    """Raise StaleTable for a table out of date; return (tables, tables whose text was regenerated and compared)."""
    outs = _lock_outs(root)
    tables = compared = 0
    for path in doc_files(root):
        _malformed(path, root, path.read_text())
        for m in MARKER.finditer(path.read_text()):
            tables += 1
            where = f"{path.relative_to(root)}: table {m['name']!r}"
            if m["name"] not in TABLES:
                raise StaleTable(f"{where}: no such table (known: {', '.join(TABLES)})")
            recorded = dict(ref.rsplit("=", 1) for ref in (m["sources"] or "").split())
            for rel, committed in recorded.items():
                now = resolve(root, rel, outs).committed
                if now != committed:
                    raise StaleTable(f"{where}: {rel} is now {now}, the table was made from {committed}: "
                                     "run `make tables`")
            if all(resolve(root, rel, outs).present for rel in recorded):
                body, sources = render(root, m["name"], outs)
                if {s.path for s in sources} != set(recorded):
                    raise StaleTable(f"{where}: made from {sorted(recorded)}, now reads "
                                     f"{sorted(s.path for s in sources)}: run `make tables`")
                if body != m["body"]:
                    raise StaleTable(f"{where}: its text differs from what its files generate: run `make tables`")
                compared += 1
    return tables, compared


# charts of the report shown in the docs: alt text in plots/report.html -> file under docs/img/
REPORT_IMAGES = {"Forgetting and buying it back: base-to-tuned interpolation": "interpolation.png",
                 "Learning-rate search (tune stage)": "tune.png",
                 "Headline metrics with 95% bootstrap intervals": "metrics.png"}


def report_images(html: str) -> dict[str, bytes]:
    """The report's embedded PNG charts named in REPORT_IMAGES, as {file name: bytes}."""
    import base64

    found = {}
    for alt, src in re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html):
        if alt in REPORT_IMAGES:
            found[REPORT_IMAGES[alt]] = base64.b64decode(src)
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m pairtune.doctables", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if a table is out of date")
    ap.add_argument("--images", action="store_true", help="write the report's charts to docs/img/ instead")
    ap.add_argument("--root", type=Path, default=Path.cwd())
    args = ap.parse_args(argv)
    if args.images:
        images = report_images((args.root / "plots/report.html").read_text())
        for name, data in images.items():
            tmp = args.root / "docs/img" / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(args.root / "docs/img" / name)
        print(f"docs/img: {', '.join(sorted(images))} from plots/report.html", file=sys.stderr)
        return 0
    try:
        if args.check:
            tables, compared = check(args.root)
            print(f"{tables} tables up to date ({compared} regenerated and compared)", file=sys.stderr)
        else:
            changed = update(args.root)
            print(f"tables regenerated; changed: {', '.join(changed) or 'nothing'}", file=sys.stderr)
    except StaleTable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
