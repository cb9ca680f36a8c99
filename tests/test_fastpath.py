"""The training fast path (pairtune.fastpath): same outputs and gradients as the stock forward, undone on exit."""

from __future__ import annotations

import logging

import pytest
import torch

from pairtune import fastpath, models
from pairtune.params import LoraMethod
from pairtune.training import build_loss

TEXTS = ["I smoke every day.", "I would never date a smoker.", "Hiking on weekends is my favourite thing.",
         "I love dogs.", "No pets, please, I am allergic to cats and dogs and anything with fur.", "hello world"]


@pytest.fixture
def model(tiny_model_dir):
    return models.load_st(str(tiny_model_dir), "cpu")


def _features(model, texts):
    return dict(model.preprocess(texts))


def _embed(model, texts):
    return model(_features(model, texts))["sentence_embedding"]


def _stock_and_packed(model, texts):
    """Eval-mode embeddings of `texts`, stock and then packed (asserting packing really switched on)."""
    model.eval()
    with torch.no_grad():
        stock = _embed(model, texts)
        with fastpath.enabled(model, packing=True, fast_dropout=True, check_texts=TEXTS) as active:
            assert active.packed
            return stock, _embed(model, texts)


def _no_dropout(model):
    """p = 0 everywhere; BERT reads its attention-probability dropout from its nn.Dropout's p too."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


@pytest.mark.parametrize("texts", [TEXTS, TEXTS[:3], TEXTS[3:] * 3])
def test_packed_forward_gives_stock_embeddings(model, texts):
    """Several token counts, so the filler row (token count not a multiple of BUCKET) is exercised too."""
    stock, packed = _stock_and_packed(model, texts)
    n = int(_features(model, texts)["attention_mask"].sum())
    assert n % fastpath.BUCKET or texts is TEXTS  # at least the other cases pad the token count
    torch.testing.assert_close(packed, stock, atol=1e-6, rtol=0)


def test_packed_training_gradients_equal_stock(model):
    """One-pass packed loss: same loss and same gradient on every parameter (dropout off to compare)."""
    _no_dropout(model)
    model.train()
    pairs = [_features(model, TEXTS[:3]), _features(model, TEXTS[3:])]
    labels = torch.tensor([0.0, 1.0, 0.5])

    def grads(one_pass):
        model.zero_grad()
        loss = build_loss("cosine", model, binary=False, one_pass=one_pass)(
            [dict(f) for f in pairs], labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    stock_loss, stock = grads(False)
    with fastpath.enabled(model, packing=True, fast_dropout=True, check_texts=TEXTS) as active:
        assert active.packed
        packed_loss, packed = grads(True)
    torch.testing.assert_close(packed_loss, stock_loss, atol=1e-6, rtol=0)
    assert set(packed) == set(stock)
    for name in stock:
        torch.testing.assert_close(packed[name], stock[name], atol=1e-6, rtol=1e-4, msg=name)


def test_one_pass_loss_keeps_its_class_name(model):
    loss = build_loss("cosent", model, binary=True, one_pass=True)
    assert type(loss).__name__ == "CoSENTLoss"
    assert isinstance(loss, type(build_loss("cosent", model, binary=True)))


def test_packing_runs_through_a_peft_adapter(model):
    models.add_adapter(model, LoraMethod(method="lora", lr=1e-3, r=4, alpha=8, dropout=0.0,
                                         target_modules=("query", "value"), rslora=False, dora=False,
                                         init="default", loraplus_ratio=1.0), 0)
    with torch.no_grad():  # a non-zero B, so the adapter is on the path being compared
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    stock, packed = _stock_and_packed(model, TEXTS)
    torch.testing.assert_close(packed, stock, atol=1e-6, rtol=0)


def test_everything_is_undone_on_exit(model, tmp_path):
    stock_cls_forward = type(model[0]).forward
    with fastpath.enabled(model, packing=True, fast_dropout=True, check_texts=TEXTS):
        assert model[0].model.config._attn_implementation == fastpath.ATTENTION
        assert any("forward" in vars(m) for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model[0].model.config._attn_implementation == "sdpa"
    assert "forward" not in vars(model[0]) and type(model[0]).forward is stock_cls_forward
    assert not any("forward" in vars(m) for m in model.modules())
    model.save(str(tmp_path / "saved"))
    assert fastpath.ATTENTION not in (tmp_path / "saved" / "config.json").read_text()


def test_left_padding_tokenizer_trains_stock(model, caplog):
    model[0].tokenizer.padding_side = "left"
    with caplog.at_level(logging.WARNING), fastpath.enabled(model, True, True, TEXTS) as active:
        assert not active.packed and active.fast_dropout
    assert "packing off: the tokenizer pads on the left" in caplog.text


def test_a_failed_check_turns_packing_off(model, caplog, monkeypatch):
    monkeypatch.setattr(fastpath, "CHECK_ATOL", -1.0)  # any difference, even 0, now fails the check
    with caplog.at_level(logging.WARNING), fastpath.enabled(model, True, False, TEXTS) as active:
        assert not active.packed
        assert model[0].model.config._attn_implementation == "sdpa"
    assert "packed embeddings differ from stock" in caplog.text


def test_cheap_dropout_rate_scale_and_seed():
    x = torch.ones(1_000_003)  # not a multiple of 4: the last 64-bit draw is only partly used
    torch.manual_seed(0)
    y = fastpath.cheap_dropout(x, 0.1)
    kept = y != 0
    k = round(0.1 * 65536)
    assert abs(1 - kept.float().mean().item() - k / 65536) < 0.002  # ~6 standard deviations
    assert torch.all(y[kept] == 65536 / (65536 - k))
    assert abs(y.mean().item() - 1) < 0.005  # the expectation is kept
    torch.manual_seed(0)
    assert torch.equal(fastpath.cheap_dropout(x, 0.1), y)  # seeded like torch's own dropout
    assert fastpath.cheap_dropout(x, 0.0) is x
    assert not fastpath.cheap_dropout(x, 1.0).any()


def test_cheap_dropout_backward_masks_the_gradient():
    x = torch.randn(64, 32, requires_grad=True)
    y = fastpath.cheap_dropout(x, 0.5)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * 65536 / 32768)


def test_dropout_modules_use_cheap_masks_only_in_training(model):
    drop = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
    x = torch.ones(4096)
    with fastpath.enabled(model, packing=False, fast_dropout=True, check_texts=TEXTS):
        model.train()
        torch.manual_seed(1)
        ours = drop(x)
        torch.manual_seed(1)
        assert torch.equal(ours, fastpath.cheap_dropout(x, drop.p))
        model.eval()
        assert torch.equal(drop(x), x)


def test_manual_attention_path_equals_sdpa():
    """The path taken with cheap dropout (matmul, mask, softmax) against sdpa, with a rate too small to drop."""
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    batch, width, heads, dim = len(lengths), max(lengths), 4, 8
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    index = mask.reshape(-1).nonzero().squeeze(1)
    q, k, v = (torch.randn(1, heads, len(index), dim) for _ in range(3))
    out = {}
    for fast in (False, True):
        pack = fastpath.Pack(index, batch, width, mask.bool()[:, None, None, :], fast)
        # 1e-9 rounds to 0 of 65536 lanes: the fast path runs and drops nothing; sdpa gets dropout 0.
        out[fast], _ = fastpath.packed_attention(None, q, k, v, None, dropout=1e-9 if fast else 0.0,
                                                 scaling=dim ** -0.5, pairtune_pack=pack)
    assert out[True].shape == (1, len(index), heads, dim)
    torch.testing.assert_close(out[True], out[False], atol=1e-6, rtol=0)


def _adamw_steps(model, batches, compact_texts):
    """A few fused-AdamW steps (no weight decay, as the trainer runs) on a cosine loss; returns the weights."""
    _no_dropout(model)
    model.train()
    loss_fn = build_loss("cosine", model, binary=True)
    with fastpath.enabled(model, packing=False, fast_dropout=False, check_texts=TEXTS,
                          compact_texts=compact_texts) as active:
        assert active.compact_embedding is (compact_texts is not None)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0,
                                fused=True)
        for a, b in batches:
            loss = loss_fn([_features(model, a), _features(model, b)], torch.tensor([1.0, 0.0, 1.0]))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compact_embedding_trains_exactly_like_the_whole_table(tiny_model_dir):
    """Only the rows of train tokens get an optimizer state, and the result equals dense training."""
    batches = [(TEXTS[:3], TEXTS[3:]), (TEXTS[3:], TEXTS[:3])] * 2
    train_texts = [t for pair in batches for side in pair for t in side]
    dense_model = models.load_st(str(tiny_model_dir), "cpu")
    before = dense_model[0].model.get_input_embeddings().weight.detach().clone()
    dense = _adamw_steps(dense_model, batches, None)
    compact_model = models.load_st(str(tiny_model_dir), "cpu")
    compact = _adamw_steps(compact_model, batches, train_texts)
    assert dense.keys() == compact.keys()  # the stock module is back, nothing renamed
    for key in dense:
        torch.testing.assert_close(compact[key], dense[key], atol=1e-6, rtol=0, msg=key)
    emb = compact_model[0].model.get_input_embeddings()
    assert isinstance(emb, torch.nn.Embedding) and emb.weight.requires_grad
    used = {i for t in train_texts for i in compact_model.tokenize([t])["input_ids"][0].tolist()}
    untouched = [i for i in range(before.shape[0]) if i not in used]
    assert untouched and torch.equal(emb.weight[untouched], before[untouched])
    assert not torch.equal(emb.weight[sorted(used - {0})], before[sorted(used - {0})])


def test_compact_embedding_refuses_a_training_token_without_a_row(model):
    model.train()
    with fastpath.enabled(model, packing=True, fast_dropout=False, check_texts=TEXTS,
                          compact_texts=["I love dogs."]):
        with pytest.raises(RuntimeError, match="has no trainable row"):
            _embed(model, ["I smoke every day."])


def test_the_tiny_model_knows_the_generator_words(model):
    """Regression: transformers 5 ignored `vocab_file=` and the fixture's tokenizer had only the 5 special
    tokens, so every word was [UNK] and tiny-model tests trained on sequence lengths alone."""
    ids = model.tokenize(["I would never date a smoker."])["input_ids"][0].tolist()
    assert model[0].tokenizer.unk_token_id not in ids and len(set(ids)) == len(ids)


def test_pretokenized_batches_equal_the_models_preprocess(model):
    """Stored token ids, padded per batch, give exactly what the tokenizer would: keys, dtypes, values."""
    texts = TEXTS + ["", "a " * 300]  # an empty text and one the tokenizer truncates
    pre = fastpath.Pretokenized(model, texts, chunk=3)  # several chunks, padded to different widths
    assert pre.check([texts, texts[::-1], texts[2:3], [texts[0]] * 4]) is None
    for batch in ([TEXTS[4], TEXTS[5]], texts):
        mine, stock = pre(batch), model.preprocess(batch)
        assert list(mine) == list(stock)
        for k, v in stock.items():
            assert torch.equal(mine[k], v) if isinstance(v, torch.Tensor) else mine[k] == v


def test_pretokenized_hands_what_it_cannot_answer_to_the_model(model, monkeypatch):
    pre = fastpath.Pretokenized(model, TEXTS)
    calls = []
    stock = model.preprocess
    monkeypatch.setattr(model, "preprocess", lambda *a, **kw: calls.append((a, kw)) or stock(*a, **kw))
    pre(TEXTS[:2])
    assert calls == []
    pre(["a text it never saw"])
    pre(TEXTS[:2], prompt="query: ")
    assert [c[0][0] for c in calls] == [["a text it never saw"], TEXTS[:2]]


def test_pretokenized_off_when_it_would_differ(model, monkeypatch, caplog):
    monkeypatch.setattr(fastpath.Pretokenized, "__call__",
                        lambda self, inputs, prompt=None, **kw: {**model.preprocess(inputs), "modality": "image"})
    with caplog.at_level(logging.WARNING):
        assert fastpath.pretokenized(model, TEXTS, [TEXTS]) is None
    assert "tokenise-once off: modality differs" in caplog.text
