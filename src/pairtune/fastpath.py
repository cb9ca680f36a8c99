"""Faster training steps on the same recipe: padding-free forward passes and cheaper dropout masks on CPU.

Changes to how a step is computed, none to what is trained (same data order, loss, schedule):

- packing: the texts of a batch run through the transformer as one padding-free token sequence, and
  attention is still computed text by text. On the demo data 40% of a padded batch's tokens are padding,
  and every linear layer pays for them.
- one pass: both columns of a pair batch go through the model in one call. sentence-transformers embeds
  the first column separately because padding two columns to one width costs compute; packed, it does not.
- cheap dropout (CPU only): torch's CPU dropout draws one 32-bit Mersenne-Twister number per element,
  about 1 ms for one 413 x 384 activation, and a third of a LoRA forward pass goes to it. Here one 64-bit
  draw gives four 16-bit lanes, each dropped when below round(p * 65536) / 65536: the drop rate is p to
  within 1/131072 and kept values are scaled by the exact inverse keep rate, so the expectation is unchanged.
  The random stream differs from torch's, as it would on another device.
- compact embedding (full fine-tuning): only the word-embedding rows of tokens that occur in the train
  split are trainable, as one small parameter; the other ~29,000 rows of the 30,522 x 384 table stay frozen.
  Exact, not an approximation: a row whose token never occurs gets a zero gradient at every step, and with
  AdamW at zero weight decay (the trainer's default, which pairtune keeps) zero moments never move it. The
  dense version paid for a 47 MB gradient, its zero fill and AdamW over 11.7M frozen-in-effect weights at
  every step. The trained rows are written back into the table on exit.
- tokenised once (`Pretokenized`): the train texts go through the model's own preprocess once, in chunks,
  and each step's batch is assembled from the stored token ids instead of calling the tokenizer again
  (0.9 ms a column a step on the demo data alone, ~1.8 ms beside training's threads in a profile; exact:
  checked against the model's preprocess before training).
- on CPU with glibc, large freed blocks stay in the heap for the block (see `_keep_freed_memory`).

`enabled(...)` turns them on for a block and checks, before training starts, that the packed forward gives
the stock forward's embeddings on real texts; a model it does not support, or that fails the check, trains
the stock way and the log says why. Everything is undone on exit, so saving and the load guard see the
stock model.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

ATTENTION = "pairtune_packed"  # the name our attention function is registered under in transformers
CHECK_ATOL = 1e-4  # packed vs stock embeddings of the same texts, fp32, eval mode
BUCKET = 16  # packed token counts are rounded up to a multiple of this (see _packed_forward)
_LANES = 65536  # 16-bit lanes: the resolution of the dropout rate
_STOCK_ATTENTION = ("sdpa", "eager")
_TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids"}
_PASSIVE_KEYS = {"modality", "prompt_length", "task"}  # ST bookkeeping the packed forward leaves in place


@dataclass(frozen=True)
class Active:
    """What `enabled` switched on."""
    packed: bool
    fast_dropout: bool
    compact_embedding: bool = False


@dataclass(frozen=True)
class Pack:
    """Where the packed tokens sit in the padded batch: passed to the attention function as a kwarg."""
    index: torch.Tensor  # position of each packed token (filler tokens last) in the flattened padded layout
    batch: int  # rows of the padded layout: the texts, plus one row for the filler tokens if there are any
    length: int
    key_mask: torch.Tensor  # (batch, 1, 1, length) bool, True where a key is a token of that row
    fast_dropout: bool


def cheap_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with masks from 16-bit lanes of 64-bit draws (see the module docstring)."""
    import torch

    k = round(p * _LANES)
    if k <= 0:
        return x
    if k >= _LANES:
        return torch.zeros_like(x)
    n = x.numel()
    # random_(-2**63, None) fills the full 64-bit range: all four 16-bit lanes of a draw are uniform.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = words.view(torch.int16)[:n].view(x.shape) >= k - _LANES // 2
    return x * keep.to(x.dtype).mul_(_LANES / (_LANES - k))


def _dropout_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """nn.Dropout.forward with `cheap_dropout` on CPU tensors; other devices keep torch's (their RNG is cheap)."""
    import torch.nn.functional as F

    if not self.training or self.p == 0 or x.device.type != "cpu":
        return F.dropout(x, self.p, self.training, self.inplace)
    return cheap_dropout(x, self.p)


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, dropout: float = 0.0, scaling: float | None = None,
                     pairtune_pack: Pack | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over packed tokens: scattered back to (batch, heads, length, dim), attended per text, gathered.

    Registered with transformers' AttentionInterface; query/key/value arrive as (1, heads, tokens, dim).
    """
    import torch
    import torch.nn.functional as F

    if pairtune_pack is None:
        raise RuntimeError(f"attention {ATTENTION!r} was called without packing information")
    pk = pairtune_pack
    heads, dim = query.shape[1], query.shape[3]

    def padded(t: torch.Tensor) -> torch.Tensor:
        flat = t[0].transpose(0, 1)  # (tokens, heads, dim)
        full = flat.new_zeros(pk.batch * pk.length, heads, dim).index_copy(0, pk.index, flat)
        return full.view(pk.batch, pk.length, heads, dim).transpose(1, 2)

    q, k, v = padded(query), padded(key), padded(value)
    if dropout > 0 and pk.fast_dropout and q.device.type == "cpu":
        scores = torch.matmul(q, k.transpose(-1, -2)) * (scaling if scaling is not None else dim ** -0.5)
        probs = torch.softmax(scores.masked_fill(~pk.key_mask, float("-inf")), dim=-1)
        out = torch.matmul(cheap_dropout(probs, dropout), v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=pk.key_mask, dropout_p=dropout, scale=scaling)
    out = out.transpose(1, 2).reshape(pk.batch * pk.length, heads, dim).index_select(0, pk.index)
    return out.unsqueeze(0), None  # (1, tokens, heads, dim), as transformers' sdpa returns it


def _packed_forward(self: Any, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """ST Transformer.forward on packed tokens; writes the padded `token_embeddings` Pooling expects."""
    if kwargs or not _TEXT_KEYS >= set(features) - _PASSIVE_KEYS or features.get("modality", "text") != "text":
        if not getattr(self, "_pairtune_warned", False):  # the metrics' `packed: 1` would overstate what ran
            log.warning("packing skipped for a batch with features %s: stock forward", sorted(features))
            self._pairtune_warned = True
        return self._pairtune_stock_forward(features, **kwargs)
    import torch

    ids, mask = features["input_ids"], features["attention_mask"]
    batch, length = ids.shape
    index = mask.reshape(-1).nonzero().squeeze(1)
    n = index.numel()
    # Right padding (checked in `unsupported`): a text's positions count from 0 as in the padded forward.
    ids_p = ids.reshape(-1)[index]
    pos_p = (mask.cumsum(1) - 1).reshape(-1)[index]
    types_p = features["token_type_ids"].reshape(-1)[index] if "token_type_ids" in features else None
    # Round the token count up to a multiple of BUCKET with filler tokens in a row of their own: they attend
    # only to each other and their outputs are dropped, so no real token's output or gradient sees them.
    # Without it every step allocates differently sized activations and glibc's heap fragments: peak RSS
    # grew from 1.3 to 1.7 GB over a run of full fine-tuning.
    extra = -n % BUCKET
    rows, width = (batch + 1, max(length, extra)) if extra else (batch, length)
    at = index // length * width + index % length
    keys = torch.zeros(rows, width, dtype=torch.bool, device=ids.device)
    keys[:batch, :length] = mask.bool()
    if extra:
        fill = torch.arange(extra, device=ids.device)
        at = torch.cat([at, batch * width + fill])
        keys[batch, :extra] = True
        ids_p = torch.cat([ids_p, torch.full_like(fill, self.tokenizer.pad_token_id or 0)])
        pos_p = torch.cat([pos_p, fill])
        types_p = None if types_p is None else torch.cat([types_p, torch.zeros_like(fill)])
    inputs = {"input_ids": ids_p.unsqueeze(0), "position_ids": pos_p.unsqueeze(0)}
    if types_p is not None:
        inputs["token_type_ids"] = types_p.unsqueeze(0)
    pack = Pack(at, rows, width, keys[:, None, None, :], self._pairtune_fast_dropout)
    hidden = self.model(**inputs, pairtune_pack=pack, return_dict=True).last_hidden_state[0, :n]
    tokens = hidden.new_zeros(batch * length, hidden.shape[-1]).index_copy(0, index, hidden)
    features["token_embeddings"] = tokens.view(batch, length, -1)
    return features


def _backbone(model: SentenceTransformer) -> Any:
    """The transformers PreTrainedModel inside the first module (under a PEFT wrapper if there is one)."""
    inner = getattr(model[0], "model", None)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def unsupported(model: SentenceTransformer) -> str | None:
    """Why packing cannot run on this model, or None if it can."""
    backbone = _backbone(model)
    config = getattr(backbone, "config", None)
    if config is None or not hasattr(model[0], "tokenizer"):
        return "the first module is not a transformers text model"
    if config.model_type != "bert" or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"model type {config.model_type!r} is not a BERT with absolute positions"
    if config._attn_implementation not in _STOCK_ATTENTION:
        return f"attention implementation {config._attn_implementation!r}"
    if getattr(model[0].tokenizer, "padding_side", "right") != "right":
        return "the tokenizer pads on the left"
    return None


def _keep_freed_memory() -> Callable[[], None] | None:
    """glibc only: keep large freed blocks in the heap instead of unmapping them; returns the undo.

    Full fine-tuning allocates a fresh 47 MB dense gradient for the word embeddings every step. Above
    glibc's mmap threshold (32 MB at most) each one is mapped anew and faulted in page by page: about 20 ms
    of a 180 ms step on the 2-core benchmark machine. Peak RSS did not change. None where there is no mallopt.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    if not (mallopt(mmap, 256 << 20) and mallopt(trim, 512 << 20)):
        return None

    def undo() -> None:  # glibc's defaults (setting them also ends its dynamic threshold, which is harmless)
        mallopt(mmap, 128 << 10)
        mallopt(trim, 128 << 10)

    return undo


def _compact_embedding_class() -> type:
    import torch
    import torch.nn.functional as F

    class CompactEmbedding(torch.nn.Module):
        """A word-embedding table whose trainable part is only `rows`; the full table is used frozen."""

        def __init__(self, full: torch.nn.Embedding, rows: torch.Tensor) -> None:
            super().__init__()
            self.full = full
            self.rows = torch.nn.Parameter(full.weight.detach()[rows].clone())
            remap = torch.full((full.num_embeddings,), -1, dtype=torch.long, device=rows.device)
            remap[rows] = torch.arange(rows.numel(), device=rows.device)
            self.register_buffer("remap", remap, persistent=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pos = self.remap[ids]
            hit = pos >= 0
            if self.training and torch.is_grad_enabled() and ids.device.type == "cpu":
                # A training token without a trainable row would silently lose its gradient.
                lost = ~hit & (ids != (self.full.padding_idx if self.full.padding_idx is not None else -1))
                if bool(lost.any()):
                    raise RuntimeError(f"compact embedding: token id {int(ids[lost][0])} occurs in training "
                                       "but has no trainable row")
            frozen = F.embedding(ids, self.full.weight)
            return torch.where(hit.unsqueeze(-1), F.embedding(pos.clamp(min=0), self.rows), frozen)

    return CompactEmbedding


@contextmanager
def _compact_embedding(model: SentenceTransformer, texts: list[str]) -> Iterator[None]:
    """Train only the word-embedding rows of the tokens in `texts` (see the module docstring)."""
    import torch

    backbone = _backbone(model)
    full = backbone.get_input_embeddings()
    tokenizer = model[0].tokenizer
    # Tokenised without truncation: a superset of what training sees is safe (an extra row stays exact).
    # Distinct texts, in chunks: one call on every text held an Encoding object per text (+1.2 GB peak RSS at
    # 147,500 train pairs).
    distinct, ids = sorted(set(texts)), set()
    for start in range(0, len(distinct), 4096):
        ids.update(i for seq in tokenizer(distinct[start:start + 4096], add_special_tokens=True)["input_ids"]
                   for i in seq)
    ids |= set(tokenizer.all_special_ids)
    ids.discard(full.padding_idx)  # the stock embedding never trains the padding row either
    rows = torch.tensor(sorted(ids), dtype=torch.long, device=full.weight.device)
    compact = _compact_embedding_class()(full, rows)
    was = full.weight.requires_grad
    full.weight.requires_grad_(False)
    backbone.set_input_embeddings(compact)
    log.info("compact embedding: %d of %d word-embedding rows trainable (the rest get no gradient)",
             rows.numel(), full.num_embeddings)
    try:
        yield
    finally:
        backbone.set_input_embeddings(full)
        with torch.no_grad():
            full.weight[rows] = compact.rows.detach().to(full.weight.dtype)
        full.weight.requires_grad_(was)


def compact_unsupported(model: SentenceTransformer) -> str | None:
    """Why the compact embedding cannot run on this model, or None if it can."""
    backbone = _backbone(model)
    if backbone is None or not hasattr(backbone, "get_input_embeddings"):
        return "the first module is not a transformers model"
    emb = backbone.get_input_embeddings()
    import torch

    if not isinstance(emb, torch.nn.Embedding) or not emb.weight.requires_grad:
        return "the word embeddings are not a trainable torch Embedding"
    out = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is emb.weight:
        return "the word embeddings are tied to the output layer"
    return None


class Pretokenized:
    """`model.preprocess` for a fixed set of texts, tokenised once (see the module docstring).

    Token ids of the distinct texts are kept flat (one int array and offsets); a batch is padded on the right
    to its longest text, as the tokenizer pads. A call it cannot answer from that (a prompt or other
    arguments, a text it has not seen) goes to the model's own preprocess. `check` before use.
    """

    def __init__(self, model: SentenceTransformer, texts: list[str], chunk: int = 4096) -> None:
        import numpy as np

        self.model = model
        distinct = sorted(set(texts))
        self.row = {t: i for i, t in enumerate(distinct)}
        ids, types, lengths = [], [], []
        self.extra: dict[str, Any] = {}  # what preprocess returns besides tensors ("modality": "text")
        for start in range(0, len(distinct), chunk):
            f = model.preprocess(distinct[start:start + chunk])
            mask = f["attention_mask"].numpy()
            n = mask.sum(axis=1)
            lengths.append(n)
            keep = np.arange(mask.shape[1]) < n[:, None]  # right padding: a text's tokens come first
            ids.append(f["input_ids"].numpy()[keep])
            types.append(f["token_type_ids"].numpy()[keep] if "token_type_ids" in f else None)
            self.extra = {k: v for k, v in f.items() if k not in _TEXT_KEYS}
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        self.types = None if not types or types[0] is None else np.concatenate(types)
        tok = model[0].tokenizer
        self.pad_id = tok.pad_token_id or 0

    def __call__(self, inputs: list[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if prompt or kwargs or not all(isinstance(t, str) and t in self.row for t in inputs):
            return self.model.preprocess(inputs, prompt=prompt, **kwargs)
        import numpy as np
        import torch

        rows = np.fromiter((self.row[t] for t in inputs), dtype=np.int64, count=len(inputs))
        n, start = self.lengths[rows], self.offsets[rows]
        width = int(n.max()) if len(rows) else 0
        keep = np.arange(width) < n[:, None]
        flat = (start[:, None] + np.arange(width))[keep]  # positions of each text's tokens, row by row
        out: dict[str, Any] = {}
        ids = np.full((len(rows), width), self.pad_id, dtype=self.ids.dtype)
        ids[keep] = self.ids[flat]
        out["input_ids"] = torch.from_numpy(ids)
        if self.types is not None:
            types = np.zeros((len(rows), width), dtype=self.types.dtype)
            types[keep] = self.types[flat]
            out["token_type_ids"] = torch.from_numpy(types)
        out["attention_mask"] = torch.from_numpy(keep.astype(np.int64))
        return out | self.extra

    def check(self, batches: list[list[str]]) -> str | None:
        """Why this is not the model's own preprocess on `batches` (None if it is, key for key)."""
        import torch

        for texts in batches:
            mine, stock = self(texts), self.model.preprocess(texts)
            if list(mine) != list(stock):
                return f"keys {list(mine)} vs {list(stock)}"
            for k, v in stock.items():
                m = mine[k]
                same = (isinstance(v, torch.Tensor) and isinstance(m, torch.Tensor) and m.dtype == v.dtype
                        and m.shape == v.shape and bool(torch.equal(m, v))) or (
                        not isinstance(v, torch.Tensor) and m == v)
                if not same:
                    return f"{k} differs from the model's preprocess"
        return None


def pretokenized(model: SentenceTransformer, texts: list[str], check: list[list[str]]) -> Pretokenized | None:
    """A checked `Pretokenized` for `texts`, or None (logged) where it does not reproduce the model's own."""
    try:
        pre = Pretokenized(model, texts)
        reason = pre.check(check)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # a model whose preprocess differs in kind
        reason = f"{type(err).__name__}: {err}"
    if reason:
        log.warning("tokenise-once off: %s; the tokenizer runs every step", reason)
        return None
    log.info("tokenise-once: %d distinct train texts tokenised up front (checked against the model's "
             "preprocess on %d batches)", len(pre.row), len(check))
    return pre


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, packed_attention)


@contextmanager
def _patched(model: SentenceTransformer, packed: bool, fast_dropout: bool) -> Iterator[None]:
    import torch

    first, config = model[0], _backbone(model).config
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] if fast_dropout else []
    stock_attention = config._attn_implementation
    try:
        for m in dropouts:
            m.forward = types.MethodType(_dropout_forward, m)
        if packed:
            _register()
            first._pairtune_stock_forward = first.forward
            first._pairtune_fast_dropout = fast_dropout
            first.forward = types.MethodType(_packed_forward, first)
            config._attn_implementation = ATTENTION
        yield
    finally:
        for m in dropouts:
            del m.forward
        if packed:
            config._attn_implementation = stock_attention
            del first.forward, first._pairtune_stock_forward, first._pairtune_fast_dropout
            vars(first).pop("_pairtune_warned", None)


def _max_delta(model: SentenceTransformer, texts: list[str]) -> float:
    """Largest |packed - stock| embedding component on `texts`, fp32, eval mode."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            features = model.preprocess(texts)
            features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
            stock = model(dict(features))["sentence_embedding"]
            with _patched(model, packed=True, fast_dropout=False):
                packed = model(dict(features))["sentence_embedding"]
        return float((stock - packed).abs().max())
    finally:
        model.train(was_training)


@contextmanager
def enabled(model: SentenceTransformer, packing: bool, fast_dropout: bool, check_texts: list[str],
            compact_texts: list[str] | None = None) -> Iterator[Active]:
    """Switch the fast path on for the block; yields what is active (packing only if it checks out).

    `compact_texts`: the train texts whose tokens keep trainable embedding rows (None: the whole table
    trains). The optimizer must not decay weights (see the module docstring).
    """
    if packing:
        reason = unsupported(model)
        if reason is None:
            delta = _max_delta(model, check_texts)
            if delta > CHECK_ATOL:
                reason = f"packed embeddings differ from stock by {delta:.1e} (> {CHECK_ATOL:g})"
            else:
                log.info("packing: padding-free forward checked against stock on %d texts (max |delta| %.1e)",
                         len(check_texts), delta)
        if reason:
            log.warning("packing off: %s; training with padded batches", reason)
            packing = False
    compact = compact_texts is not None
    if compact and (reason := compact_unsupported(model)):
        log.warning("compact embedding off: %s; the whole embedding table trains", reason)
        compact = False
    cpu = model.device.type == "cpu"
    undo = _keep_freed_memory() if cpu else None
    try:
        with (_compact_embedding(model, compact_texts) if compact else nullcontext(),
              _patched(model, packing, fast_dropout and cpu)):
            yield Active(packed=packing, fast_dropout=fast_dropout and cpu, compact_embedding=compact)
    finally:
        if undo:
            undo()
