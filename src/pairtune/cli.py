"""The `pairtune` command: score pairs and embed texts with any pairtune model or export folder.

    pairtune score MODEL "text a" "text b"          cosine and the decision at the model's dev threshold
    pairtune score MODEL --pairs FILE [--out FILE]  one score a pair (.jsonl/.csv/.tsv in and out)
    pairtune embed MODEL --texts FILE --out FILE.npy

MODEL is a folder: an export (models/export/<mode>, ONNX by default: fast to start), a pipeline model
(models/full, models/lora, verified by the same guard as the pipeline), or a plain SentenceTransformer
folder. Nothing is fetched from a hub. Heavy libraries are imported only once the arguments are valid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairtune.errors import PairtuneError

BACKENDS = ("auto", "torch", "onnx", "int8")
EXAMPLES = """examples:
  pairtune score models/export/lora "I smoke every day." "I would never date a smoker."
  pairtune score models/export/lora --pairs pairs.csv --out scores.csv
  pairtune embed models/export/full --texts sentences.txt --out embeddings.npy

MODEL is a folder: models/export/<mode> (ONNX by default, fast to start), models/full, models/lora
(PyTorch, through the load guard) or any SentenceTransformer folder. `pairtune COMMAND --help` for options."""


@dataclass
class Scorer:
    """An opened model: how it embeds, and the threshold and names of its decision (if it has one)."""

    encode: Any  # (texts, batch_size) -> np.ndarray of unit rows
    backend: str
    threshold: float | None
    positive: str
    negative: str

    def decide(self, cosine: float) -> str | None:
        if self.threshold is None:
            return None
        return self.positive if cosine >= self.threshold else self.negative


def _manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "pairtune.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PairtuneError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def open_model(model: str, backend: str, threshold: float | None) -> Scorer:
    """Open a model folder with the chosen backend; `threshold` overrides the stored dev threshold."""
    folder = Path(model)
    if not folder.is_dir():
        raise PairtuneError(f"{model}: no such model folder (give a pairtune model or export folder)")
    manifest = _manifest(folder)
    if manifest is None and not (folder / "modules.json").is_file():
        raise PairtuneError(f"{model}: not a pairtune model, export or SentenceTransformer folder "
                            "(no pairtune.json or modules.json)")
    manifest = manifest or {}
    is_export = manifest.get("mode") == "export"
    if is_export:
        backend = _usable_backend(folder, manifest, backend)
    elif backend == "auto":
        backend = "torch"
    if backend in ("onnx", "int8"):
        from pairtune import export

        if not is_export:
            raise PairtuneError(f"{model}: --backend {backend} needs an export folder (models/export/<mode>)")
        enc = export.OnnxEncoder.load(folder, export.ONNX_INT8 if backend == "int8" else export.ONNX_FP32)
        encode = enc.encode
    else:
        _quiet_torch_stack()
        from pairtune import models

        st = models.load_model(folder) if manifest else models.load_st(str(folder), "cpu")
        encode = lambda texts, batch_size: models.embed(st, texts, batch_size)
    stored = manifest.get("threshold_int8" if backend == "int8" else "threshold")
    return Scorer(encode, backend, threshold if threshold is not None else stored,
                  manifest.get("positive", "positive"), manifest.get("negative", "negative"))


def _usable_backend(folder: Path, manifest: dict[str, Any], backend: str) -> str:
    """The backend an export folder can serve: a variant the export stage refused falls back to the next one
    (int8 -> ONNX fp32 -> PyTorch), with one line on stderr saying why."""
    from pairtune import export

    variants = manifest.get("variants", {})
    ok = {v: export.usable(manifest, v) and (folder / export.VARIANT_FILES[v]).is_file() for v in ("onnx", "int8")}
    wanted = "onnx" if backend == "auto" else backend
    chosen = wanted
    for fallback in ("int8", "onnx", "torch")[("int8", "onnx", "torch").index(wanted):]:
        chosen = fallback
        if fallback == "torch" or ok[fallback]:
            break
    if chosen != wanted:
        why = variants.get(wanted, "not in this folder")
        name = {"onnx": "ONNX fp32", "int8": "int8", "torch": "PyTorch"}
        print(f"pairtune: {name[wanted]} {why}; using {name[chosen]}", file=sys.stderr)
    return chosen


def _quiet_torch_stack() -> None:
    # A one-line answer must not drown in load reports and progress bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")  # PEFT's base-path rename note, transformers' deprecations: not the user's
    import transformers

    transformers.utils.logging.disable_progress_bar()


def _score_pairs(scorer: Scorer, args: argparse.Namespace) -> None:

    from pairtune import io
    from pairtune import metrics as M
    from pairtune.data import read_pairs
    from pairtune.evaluation import unique_texts
    from pairtune.params import General

    cols = General(path=args.pairs, text_1=args.text_1, text_2=args.text_2, label=args.label,
                   label_min=args.label_min, label_max=args.label_max, positive_threshold=args.positive_threshold)
    pairs = read_pairs(args.pairs, cols, need_label=False)
    texts = unique_texts(pairs)
    scores = M.pair_scores(scorer.encode(texts, args.batch_size), {t: i for i, t in enumerate(texts)}, pairs)
    rows = []
    for p, s in zip(pairs, scores, strict=True):
        # the user's own column names and label scale: a scored file lines up with the file it came from
        row = {args.text_1: p["text_1"], args.text_2: p["text_2"], "cosine": round(float(s), 6)}
        if scorer.threshold is not None:
            row["decision"] = scorer.decide(float(s))
        if p["label"] is not None:
            row[args.label] = _unscaled(p["label"], cols)
        rows.append(row)
    fmt = args.format or (Path(args.out).suffix.lower().lstrip(".") if args.out else "jsonl")
    if fmt not in ("jsonl", "csv", "tsv"):
        raise PairtuneError(f"{args.out}: cannot tell the output format from {Path(args.out).suffix!r}; "
                            "use .jsonl, .csv or .tsv, or --format")
    text = _format(rows, fmt)
    if args.out:
        io.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    _summary(scorer, pairs, scores, args)


def _unscaled(label: float, cols: Any) -> float | int:
    """A label back on the file's own scale (read_pairs scales to [0, 1]); whole numbers stay whole."""
    v = round(cols.label_min + label * (cols.label_max - cols.label_min), 9)
    return int(v) if v.is_integer() else v


def _format(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    import csv
    import io as sio

    buf = sio.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fields, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _summary(scorer: Scorer, pairs: list[dict[str, Any]], scores: Any, args: argparse.Namespace) -> None:
    """One line on stderr: how many pairs, and AUC/accuracy where the file has labels."""
    import numpy as np

    from pairtune import metrics as M

    line = f"{len(pairs)} pairs scored ({scorer.backend})"
    labelled = [i for i, p in enumerate(pairs) if p["label"] is not None]
    if labelled:
        y = np.array([pairs[i]["label"] >= args.positive_threshold for i in labelled], dtype=int)
        s = scores[labelled]
        if M.both_classes(y):
            line += f"; AUC {M.auc(s, y):.4f} on {len(labelled)} labelled pairs"
        if scorer.threshold is not None:
            line += f"; accuracy {M.classify(s, y, scorer.threshold)['accuracy']:.4f} at {scorer.threshold:.4f}"
    print(line, file=sys.stderr)


def cmd_score(args: argparse.Namespace) -> None:
    if args.pairs and args.texts:
        raise PairtuneError("score: give two texts or --pairs FILE, not both")
    if not args.pairs and len(args.texts) != 2:
        raise PairtuneError(f"score: expected two texts (or --pairs FILE), got {len(args.texts)}")
    if args.pairs and not Path(args.pairs).is_file():
        raise PairtuneError(f"{args.pairs}: file not found")
    scorer = open_model(args.model, args.backend, args.threshold)
    if args.pairs:
        _score_pairs(scorer, args)
        return
    a, b = (t.strip() for t in args.texts)
    if not a or not b:
        raise PairtuneError("score: a text is empty")
    emb = scorer.encode([a, b], 2)
    cos = float(emb[0] @ emb[1])
    decision = scorer.decide(cos)
    if decision is None:
        print(f"cosine {cos:.4f} (no decision: this folder has no dev threshold; pass --threshold or use an export)")
    else:
        print(f"cosine {cos:.4f} -> {decision} (threshold {scorer.threshold:.4f}, {scorer.backend})")


def cmd_embed(args: argparse.Namespace) -> None:
    if Path(args.out).suffix.lower() != ".npy":
        raise PairtuneError(f"{args.out}: --out must end in .npy")
    from pairtune.data import read_texts

    texts = read_texts(args.texts, args.field)
    scorer = open_model(args.model, args.backend, None)
    emb = scorer.encode(texts, args.batch_size)
    import io as sio

    import numpy as np

    from pairtune import io

    buf = sio.BytesIO()
    np.save(buf, emb)
    io.write_bytes(args.out, buf.getvalue())
    print(f"{len(texts)} texts -> {args.out} ({emb.shape[0]} x {emb.shape[1]} float32, {scorer.backend})",
          file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pairtune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{score,embed}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", metavar="MODEL", help="model or export folder")
    common.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: ONNX fp32 for an export folder, else PyTorch; int8: the quantised ONNX "
                             "(its own dev threshold)")
    common.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")

    sc = sub.add_parser("score", parents=[common], help="cosine of text pairs, and the decision at the dev threshold",
                        description="Score one pair given on the command line, or every pair of a file.")
    sc.add_argument("texts", nargs="*", metavar="TEXT", help="two texts to compare")
    sc.add_argument("--pairs", metavar="FILE", help="pair file (.jsonl, .csv or .tsv, as for `prepare`)")
    sc.add_argument("--out", metavar="FILE", help="write scores here (.jsonl, .csv or .tsv) instead of stdout")
    sc.add_argument("--format", choices=("jsonl", "csv", "tsv"), help="output format (default: from --out, else jsonl)")
    sc.add_argument("--threshold", type=float, help="decide at this cosine instead of the stored dev threshold")
    sc.add_argument("--text-1", default="text_1", help="field / column of the first text (default text_1)")
    sc.add_argument("--text-2", default="text_2", help="field / column of the second text (default text_2)")
    sc.add_argument("--label", default="label", help="field / column of the optional label (default label)")
    sc.add_argument("--label-min", type=float, default=0.0, help="lowest label on the file's scale (default 0)")
    sc.add_argument("--label-max", type=float, default=1.0, help="highest label on the file's scale (default 1)")
    sc.add_argument("--positive-threshold", type=float, default=0.5,
                    help="scaled label >= this is a positive, for the AUC summary (default 0.5)")
    sc.set_defaults(func=cmd_score)

    em = sub.add_parser("embed", parents=[common], help="embed texts into a .npy matrix",
                        description="Embed every text of a file (one a line for .txt; a field of .jsonl/.csv/.tsv).")
    em.add_argument("--texts", metavar="FILE", required=True, help="texts: .txt (one a line), .jsonl, .csv or .tsv")
    em.add_argument("--field", default="text", help="field / column holding the text (default text)")
    em.add_argument("--out", metavar="FILE.npy", required=True, help="where to write the float32 matrix")
    em.set_defaults(func=cmd_embed)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        args.func(args)
    except PairtuneError as err:
        print(f"pairtune: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an unwritable --out, a full disk: the user's to fix, not a traceback
        print(f"pairtune: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a corrupt model file, a library failure: one line; PAIRTUNE_DEBUG=1 re-raises
        if os.environ.get("PAIRTUNE_DEBUG"):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"pairtune: error: {type(err).__name__}: {first} (PAIRTUNE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
