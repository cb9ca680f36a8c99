"""base: resolve the base model, write its fingerprint (probe embeddings) to a small folder, and evaluate it.

Later stages load the base through this folder, so a changed base model (another package version, another
path) is caught by the probe check instead of silently mixing models. The base's evaluation (the evaluate
stage's code, stages/evaluate.py) is what every method is compared with.
Reads params `base.*`, those evaluate reads, and <data>/{dev,eval}.jsonl. Writes <out>/ (pairtune.json,
probe.json, probe.npy), <metrics> and <plots>/ (as the evaluate stage writes them).
Run: python stages/base.py --data data/prepared --out models/base --metrics metrics/evaluate/base.json \
         --plots plots/evaluate/base
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse

from evaluate import score  # the evaluate stage's own code (stages/ is on sys.path: the script's folder)
from pairtune import families, io, models, params
from pairtune.data import read_prepared
from pairtune.errors import run_stage, setup_logging


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    for flag in ("--data", "--out"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--metrics", help="with --plots: evaluate the base too (the pipeline does; bench/families does not)")
    ap.add_argument("--plots")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    model = models.load_base(p.base.model, "cpu")
    family = families.check_supported(model, p.base.model)  # an unsupported architecture stops here, in one line
    texts = models.probe_texts(read_prepared(f"{args.data}/dev.jsonl"), p.base.probe_size)
    manifest = {"mode": "base", "base_model": p.base.model, "family": family.name,
                "model_type": families.model_type(model), "dim": model.get_embedding_dimension(),
                "parameters": models.count_params(model)[1]}
    with io.atomic_dir(args.out) as tmp:
        models.write_fingerprint(tmp, manifest, texts, models.embed_probe(model, texts))
    if args.metrics and args.plots:
        score(p, args.out, args.data, args.metrics, args.plots, "base")


if __name__ == "__main__":
    run_stage(main)
