"""Encoder families pairtune supports as a base model, and LoRA targets named by role.

`train.<method>.target_modules` may name *roles*, which mean the same thing in every family, or module names as
PEFT matches them (by suffix). Roles: `query`, `key`, `value`, `attention_output`, `ffn_in`, `ffn_out`, and
the groups `attention` (the four attention projections), `ffn` (both feed-forward layers) and `all_linear`.
Each role maps to the module names of the family; e.g. `query` is BERT's `attention.self.query`, MPNet's
`attention.attn.q`, DistilBERT's `attention.q_lin`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pairtune.errors import PairtuneError

ROLES = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
GROUPS = {"attention": ROLES[:4], "ffn": ROLES[4:], "all_linear": ROLES}


@dataclass(frozen=True)
class Family:
    name: str  # as the docs and errors call it
    model_types: tuple[str, ...]  # transformers' config.model_type values of the family
    roles: dict[str, str]  # role -> regex of the module name's end (PEFT matches module names in full)
    packing: bool  # pairtune.fastpath's packed batches are exact for it (measured: tests/test_fastpath.py)


_BERT_ROLES = {"query": r"attention\.self\.query", "key": r"attention\.self\.key", "value": r"attention\.self\.value",
               "attention_output": r"attention\.output\.dense", "ffn_in": r"intermediate\.dense",
               "ffn_out": r"layer\.\d+\.output\.dense"}

FAMILIES = (
    Family("BERT", ("bert",), _BERT_ROLES, packing=True),
    # RoBERTa numbers positions from padding_idx + 1 off the input ids: packed sequences would shift them
    Family("RoBERTa / XLM-RoBERTa", ("roberta", "xlm-roberta", "camembert"), _BERT_ROLES, packing=False),
    Family("MPNet", ("mpnet",), {"query": r"attention\.attn\.q", "key": r"attention\.attn\.k",
                                 "value": r"attention\.attn\.v", "attention_output": r"attention\.attn\.o",
                                 "ffn_in": r"intermediate\.dense", "ffn_out": r"layer\.\d+\.output\.dense"},
           packing=False),
    Family("DistilBERT", ("distilbert",), {"query": r"attention\.q_lin", "key": r"attention\.k_lin",
                                           "value": r"attention\.v_lin", "attention_output": r"attention\.out_lin",
                                           "ffn_in": r"ffn\.lin1", "ffn_out": r"ffn\.lin2"}, packing=False),
)


def model_type(model: Any) -> str:
    """transformers' model_type of a SentenceTransformer's backbone (PEFT-wrapped or not)."""
    backbone = model[0].model
    config = getattr(backbone, "config", None)
    return str(getattr(config, "model_type", type(backbone).__name__))


def family_of(kind: str) -> Family | None:
    return next((f for f in FAMILIES if kind in f.model_types), None)


def supported_list() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)


def check_supported(model: Any, source: str) -> Family:
    """The family of `model`, or a one-line error naming the model type and the supported ones."""
    kind = model_type(model)
    fam = family_of(kind)
    if fam is None:
        raise PairtuneError(f"base.model {source}: model type {kind!r} is not supported; supported: "
                            f"{supported_list()}")
    return fam


def linear_names(backbone: Any) -> list[str]:
    """The backbone's linear layers, one pattern each with layer numbers as '*' (what an error lists)."""
    import torch

    names = {re.sub(r"\.\d+\.", ".*.", n) for n, m in backbone.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def target_regex(backbone: Any, kind: str, targets: tuple[str, ...], unused: str,
                 key: str = "train.lora.target_modules") -> tuple[str, list[str]]:
    """One regex PEFT matches module names against in full, and the modules it matches.

    A target is a role (above) or a module name matched by suffix as PEFT does; modules matching `unused`
    (parts the sentence embedding never uses) are never targeted. Raises PairtuneError, listing the model's
    linear layers, when a target matches nothing that the embedding uses; `key` is the param its line names."""
    import torch

    fam = family_of(kind)
    linear = [n for n, m in backbone.named_modules() if isinstance(m, torch.nn.Linear)]
    parts = []
    for t in targets:
        roles = GROUPS.get(t, (t,) if t in ROLES else ())
        if roles and fam is not None:
            part = "|".join(dict.fromkeys(fam.roles[r] for r in roles))
        elif roles:
            raise PairtuneError(f"params.yaml: {key}: role {t!r} needs a supported model "
                                f"family ({supported_list()}); model type {kind!r}: name its modules instead, "
                                f"e.g. {', '.join(linear_names(backbone)[:4])}")
        else:
            part = re.escape(t)
        regex = rf"(?:.*\.)?(?:{part})"
        hits = [n for n in linear if re.fullmatch(regex, n)]
        used = [n for n in hits if not re.fullmatch(unused, n)]
        if not used:
            unused_hit = ", ".join(sorted({re.sub(r"\.\d+\.", ".*.", n) for n in hits}))
            what = (f"matches only {unused_hit}, which the sentence embedding never uses" if hits
                    else "matches no linear layer")
            raise PairtuneError(f"params.yaml: {key}: {t!r} {what}; roles: "
                                f"{', '.join((*ROLES, *GROUPS))}; this model's linear layers: "
                                f"{', '.join(linear_names(backbone))}")
        parts.append(part)
    regex = rf"(?:.*\.)?(?:{'|'.join(dict.fromkeys(parts))})"
    chosen = [n for n in linear if re.fullmatch(regex, n) and not re.fullmatch(unused, n)]
    return regex, chosen


def linear_names_of(names: list[str]) -> list[str]:
    """Module names with layer numbers as '*', deduplicated (for a log line)."""
    return sorted({re.sub(r"\.\d+\.", ".*.", n) for n in names})
