"""Read, validate and normalise pair files; split dev off train; drop duplicates; refuse overlaps.

Every problem is a PairtuneError naming the file, the line and the problem, so a stage can print one line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairtune.errors import PairtuneError
from pairtune.params import Data, General, Prepare

log = logging.getLogger(__name__)

Pair = dict[str, Any]  # text_1, text_2, label (in [0, 1]), category, pair_type, extra fields; _src: "file:line"


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PairtuneError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PairtuneError(f"{path}: is a folder, expected a file") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise PairtuneError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x})") from None


def _rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record of a .jsonl / .csv / .tsv file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                # json's messages for some errors end in " at" ("Invalid control character at")
                msg = err.msg.removesuffix(" at")
                raise PairtuneError(f"{path}:{n}: malformed JSON ({msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise PairtuneError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            out.append((n, rec))
        return out
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        out = []
        try:
            start = 2
            for rec in reader:
                if None in rec:
                    raise PairtuneError(f"{path}:{start}: more fields than the header has")
                if None in rec.values():
                    raise PairtuneError(f"{path}:{start}: fewer fields than the header has")
                out.append((start, rec))
                start = reader.line_num + 1
        except csv.Error as err:
            raise PairtuneError(f"{path}:{reader.line_num}: malformed {suffix[1:].upper()} ({err})") from None
        return out
    raise PairtuneError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .tsv")


def _shown(v: Any) -> str:
    """A value as the file wrote it: quoted text, or JSON's own literals (null, true, [1])."""
    return repr(v) if isinstance(v, str) else json.dumps(v)


def _label(path: Path, n: int, v: Any, cfg: Data | General) -> float:
    if isinstance(v, bool) or v is None:
        raise PairtuneError(f"{path}:{n}: label {_shown(v)} is not a number")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise PairtuneError(f"{path}:{n}: label {_shown(v)} is not a number") from None
    if not isinstance(v, (int, float)):
        raise PairtuneError(f"{path}:{n}: label {_shown(v)} is not a number")
    if math.isnan(v) or math.isinf(v):
        raise PairtuneError(f"{path}:{n}: label is {v}, expected a finite number")
    if not cfg.label_min <= v <= cfg.label_max:
        raise PairtuneError(f"{path}:{n}: label {v:g} is outside [{cfg.label_min:g}, {cfg.label_max:g}] "
                            "(data.label_min / data.label_max)")
    return (float(v) - cfg.label_min) / (cfg.label_max - cfg.label_min)


def read_pairs(path: str | Path, cfg: Data | General, need_label: bool = True) -> list[Pair]:
    """Read one pair file into normalised records (label scaled to [0, 1]), with the column names and
    label scale of `cfg` (the `data` params, or a `general`-shaped description of any other pair file).

    With `need_label` False (scoring unlabelled pairs) a row may lack the label field: its label is None.
    """
    path = Path(path)
    rows = _rows(path, _decode(path))
    if not rows:
        raise PairtuneError(f"{path}: no pairs in file")
    renames = {cfg.text_1: "text_1", cfg.text_2: "text_2", cfg.label: "label"}
    out = []
    for n, rec in rows:
        for field in renames:
            if field not in rec and (need_label or field != cfg.label):
                raise PairtuneError(f"{path}:{n}: missing field {field!r}")
        pair = {k: v for k, v in rec.items() if k not in renames}
        for field, name in renames.items():
            if name == "label":
                continue
            value = rec[field]
            if not isinstance(value, str) or not value.strip():
                raise PairtuneError(f"{path}:{n}: field {field!r} is empty or not text")
            pair[name] = value.strip()
        pair["label"] = _label(path, n, rec[cfg.label], cfg) if cfg.label in rec else None
        pair["category"] = str(rec.get("category") or "none")
        pair["pair_type"] = str(rec.get("pair_type") or "none")
        pair["_src"] = f"{path}:{n}"
        out.append(pair)
    return out


def read_texts(path: str | Path, field: str) -> list[str]:
    """Texts to embed: a .txt file (one a line), or the `field` of each row of a .jsonl/.csv/.tsv file."""
    path = Path(path)
    text = _decode(path)
    if path.suffix.lower() == ".txt":
        rows = [(n, {field: line}) for n, line in enumerate(text.splitlines(), 1)]
    else:
        rows = _rows(path, text)
    out = []
    for n, rec in rows:
        if field not in rec:
            raise PairtuneError(f"{path}:{n}: missing field {field!r}")
        value = rec[field]
        if not isinstance(value, str) or not value.strip():
            raise PairtuneError(f"{path}:{n}: {'line' if path.suffix.lower() == '.txt' else f'field {field!r}'} "
                                "is empty or not text")
        out.append(value.strip())
    if not out:
        raise PairtuneError(f"{path}: no texts in file")
    return out


def pair_key(p: Pair) -> frozenset[str]:
    """A pair's identity, whichever order its texts come in."""
    return frozenset((p["text_1"], p["text_2"]))


def is_binary(pairs: list[Pair]) -> bool:
    """Labels are all exactly 0 or 1 after scaling."""
    return all(p["label"] in (0.0, 1.0) for p in pairs)


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, list[Pair]]
    summary: dict[str, Any]


def _dedupe(pairs: list[Pair], name: str) -> tuple[list[Pair], int]:
    seen: set[frozenset[str]] = set()
    out = []
    for p in pairs:
        k = pair_key(p)
        if k not in seen:
            seen.add(k)
            out.append(p)
    dropped = len(pairs) - len(out)
    if dropped:
        log.warning("%s: dropped %d duplicate pair(s)", name, dropped)
    return out, dropped


def prepare(train: list[Pair], dev: list[Pair] | None, eval_: list[Pair], data: Data, cfg: Prepare,
            seed: int) -> Prepared:
    """Dedupe each split, split dev off train if needed, handle overlaps, and check the eval classes."""
    summary: dict[str, Any] = {"duplicates_dropped": {}, "overlap_dropped": {}}
    train, summary["duplicates_dropped"]["train"] = _dedupe(train, "train")
    eval_, summary["duplicates_dropped"]["eval"] = _dedupe(eval_, "eval")
    if dev is None:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_dev = max(1, round(cfg.dev_fraction * len(train)))
        if n_dev >= len(train):
            raise PairtuneError(f"{data.train}: too few pairs ({len(train)}) to split off a dev set")
        held = set(order[:n_dev])
        dev = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
        summary["dev_source"] = 0  # 0: split off train, 1: its own file
    else:
        summary["dev_source"] = 1
    dev, summary["duplicates_dropped"]["dev"] = _dedupe(dev, "dev")

    for name, other in (("dev", dev), ("eval", eval_)):
        held_out = {pair_key(p): p for p in other}
        clash = [p for p in train if pair_key(p) in held_out]
        if clash and cfg.on_overlap == "error":
            p = clash[0]
            raise PairtuneError(f"{p['_src']}: pair also in the {name} split ({held_out[pair_key(p)]['_src']}); "
                                f"{len(clash)} such pair(s) in all (prepare.on_overlap: drop removes them from train)")
        train = [p for p in train if pair_key(p) not in held_out]
        summary["overlap_dropped"][f"train_{name}"] = len(clash)
        if clash:
            log.warning("dropped %d train pair(s) that are also in %s", len(clash), name)
    dev_eval = {pair_key(p) for p in dev} & {pair_key(p) for p in eval_}
    if dev_eval and cfg.on_overlap == "error":
        p = next(p for p in eval_ if pair_key(p) in dev_eval)
        raise PairtuneError(f"{p['_src']}: pair also in the dev split; {len(dev_eval)} such pair(s) in all")
    dev = [p for p in dev if pair_key(p) not in dev_eval]
    summary["overlap_dropped"]["dev_eval"] = len(dev_eval)

    splits = {"train": train, "dev": dev, "eval": eval_}
    for name, pairs in splits.items():
        if not pairs:
            raise PairtuneError(f"{name} split is empty after cleaning")
    binary = is_binary(train + dev + eval_)
    for name in ("dev", "eval"):
        positives = sum(p["label"] >= data.positive_threshold for p in splits[name])
        if positives in (0, len(splits[name])):
            src = splits[name][0]["_src"].rsplit(":", 1)[0]
            cls = "positive" if positives else "negative"
            raise PairtuneError(f"{src}: the {name} split has only {cls} pairs; AUC and F1 need both classes")
    summary["binary_labels"] = int(binary)
    for name, pairs in splits.items():
        pos = sum(p["label"] >= data.positive_threshold for p in pairs)
        summary[name] = {"pairs": len(pairs), "positives": pos, "positive_share": round(pos / len(pairs), 4)}
    return Prepared(splits, summary)


def strip_internal(pairs: list[Pair]) -> list[Pair]:
    """Records as written to disk: without the bookkeeping fields."""
    return [{k: v for k, v in p.items() if not k.startswith("_")} for p in pairs]


def read_prepared(path: str | Path) -> list[Pair]:
    """Read a split written by the prepare stage (already validated)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
