"""What another encoder family costs to train here: the default base against an all-mpnet-base-v2-sized MPNet.

No MPNet weights are at hand offline, so the larger model is a stand-in of the same architecture and size
(MPNet, hidden 768, 12 layers, 12 heads, FFN 3072; the default's 30,522-token WordPiece vocabulary where
all-mpnet-base-v2 has 30,527: ~109M parameters, ~4.8x the default's 22.7M) with random weights: the arithmetic per step is the real model's, the quality is not (eval figures
are not reported for it). Each model trains `--steps` optimizer steps of the demo recipe through pairtune's
own train code (bench/ours.py: speed knobs `auto`, so packing on for the BERT default and off for MPNet),
full and LoRA, models alternating, `--runs` times; medians of seconds per step.

Run (from the repository root, after `make repro` made data/prepared):
    python bench/families.py [--steps 20] [--runs 2]     -> bench/families.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def mpnet_standin(folder: Path, hidden: int = 768, layers: int = 12, heads: int = 12) -> Path:
    """A random-weight MPNet (by default the size of all-mpnet-base-v2) with the default's WordPiece vocabulary.
    `python bench/families.py --standin DIR --hidden 384 --layers 6` writes a small one (and nothing else):
    a local non-BERT model folder to point `base.model` at."""
    import torch
    import transformers as T
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from pairtune.models import resolve_source

    hf = folder / "hf"
    words = (Path(resolve_source("packaged")) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
    bert_specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    vocab = specials + [w for w in words if w not in bert_specials and w not in specials]
    hf.mkdir(parents=True)
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    T.MPNetTokenizerFast(vocab=str(hf / "vocab.txt"), do_lower_case=True).save_pretrained(hf)
    torch.manual_seed(0)
    config = T.MPNetConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=514,
                           pad_token_id=1)
    T.MPNetModel(config).save_pretrained(hf)
    st = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=256), Pooling(hidden, "mean"), Normalize()],
                             device="cpu")
    st.save(str(folder / "st"))
    return folder / "st"


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/families.json"))
    ap.add_argument("--standin", type=Path, help="only write a random-weight MPNet folder here (see mpnet_standin)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()
    if args.standin:
        print(mpnet_standin(args.standin, args.hidden, args.layers, heads=max(1, args.hidden // 64)))
        return

    from ruamel.yaml import YAML

    from pairtune import hardware

    work = Path(tempfile.mkdtemp(prefix="pairtune-families-"))
    models = {"all-MiniLM-L6-v2 (BERT, the default)": "packaged",
              "all-mpnet-base-v2 size (MPNet, random-weight stand-in)": str(mpnet_standin(work / "mpnet"))}
    setup = {}
    for i, (name, source) in enumerate(models.items()):
        raw = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
        raw["base"]["model"] = source
        raw["train"]["max_steps"] = args.steps
        params = work / f"params{i}.yaml"
        with params.open("w") as fh:
            YAML(typ="safe", pure=True).dump(raw, fh)
        base = work / f"base{i}"
        _run([sys.executable, str(ROOT / "stages/base.py"), "--params", str(params), "--data",
              "data/prepared", "--out", str(base)], ROOT)
        setup[name] = (params, base, json.loads((base / "pairtune.json").read_text()))
    times: dict[str, dict[str, list[float]]] = {n: {"full": [], "lora": []} for n in models}
    for _ in range(args.runs):
        for mode in ("full", "lora"):
            for name, (params, base, _) in setup.items():  # alternating: the shared machine's drift hits both
                out = json.loads(_run([sys.executable, str(ROOT / "bench/ours.py"), "--mode", mode, "--params",
                                       str(params), "--base", str(base)], ROOT).strip().splitlines()[-1])
                times[name][mode].append(out["wall_s"] / out["steps"])
    m = hardware.machine("cpu")
    result = {"machine": f"{m.describe()}, {os.cpu_count()} cores", "steps": args.steps, "runs": args.runs,
              "models": {name: {"parameters": manifest["parameters"], "model_type": manifest["model_type"],
                                "s_per_step": {mode: statistics.median(v) for mode, v in times[name].items()},
                                "raw": times[name]}
                         for name, (_, _, manifest) in setup.items()}}
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result["models"], indent=2))


if __name__ == "__main__":
    main()
