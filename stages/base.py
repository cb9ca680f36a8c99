"""base: resolve the base model and write its fingerprint (probe embeddings) to a small folder.

Later stages load the base through this folder, so a changed base model (another package version, another
path) is caught by the probe check instead of silently mixing models.
Reads params `base.*` and <dev>. Writes <out>/ (pairtune.json, probe.json, probe.npy).
Run: python stages/base.py --dev data/prepared/dev.jsonl --out models/base
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse

from pairtune import families, io, models, params
from pairtune.data import read_prepared
from pairtune.errors import run_stage, setup_logging


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dev", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    model = models.load_base(p.base.model, "cpu")
    family = families.check_supported(model, p.base.model)  # an unsupported architecture stops here, in one line
    texts = models.probe_texts(read_prepared(args.dev), p.base.probe_size)
    manifest = {"mode": "base", "base_model": p.base.model, "family": family.name,
                "model_type": families.model_type(model), "dim": model.get_embedding_dimension(),
                "parameters": models.count_params(model)[1]}
    with io.atomic_dir(args.out) as tmp:
        models.write_fingerprint(tmp, manifest, texts, models.embed_probe(model, texts))


if __name__ == "__main__":
    run_stage(main)
