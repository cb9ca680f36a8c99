"""The one strict loader that turns params.yaml into frozen dataclasses.

Unknown keys, missing keys, wrong types and values outside a declared choice stop the stage with one
line naming the file, section and key. No other module reads YAML.
"""

from __future__ import annotations

import dataclasses
import posixpath
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pairtune.errors import PairtuneError

LOSSES = ("cosine", "cosent", "angle", "contrastive", "online_contrastive", "mnrl")
# How the export stage makes its int8 graph (pairtune.export.quantize_int8; auto: it chooses on dev)
Int8Method = Literal["auto", "dynamic", "dynamic_ffn_fp32", "static", "static_ffn_fp32", "weight_only"]
Switch = bool | Literal["auto"]  # a speed knob: on, off, or decided by pairtune.hardware for this machine
Rate = float | Literal["auto"]  # a learning rate, or auto: the one the tune stage chose on dev


def _share(hi: float = 1.0) -> Any:
    """A float param that must lie in [0, hi] (checked by the loader, one line naming the key)."""
    return dataclasses.field(metadata={"range": (0.0, hi)})


@dataclass(frozen=True)
class Difficulty:
    """How realistic (hard) the generated demo data is: see pairtune.generate."""
    multi_clause: float = _share()  # share of pairs with a two-clause statement (mixed stances)
    hedged: float = _share()  # share of hedged / tolerant stances ("now and then", "doesn't bother me")
    contrast: float = _share()  # share of compatible pairs that are opposite lifestyles without a refusal
    informal: float = _share()  # share of texts with a speaker prefix or informal spelling
    label_noise: float = _share(0.5)  # share of labels flipped in every split (annotator disagreement)


@dataclass(frozen=True)
class Generate:
    n_train: int  # pairs in the generated train split
    n_dev: int
    n_eval: int
    difficulty: Difficulty


@dataclass(frozen=True)
class Data:
    dir: str  # the folder holding the pair files: the prepare stage's DVC dependency (data/demo: the demo's)
    train: str  # path of the train pairs (.jsonl, .csv or .tsv), inside `dir`
    dev: str  # "" means: split dev off train
    eval: str
    text_1: str  # field / column names
    text_2: str
    label: str
    label_min: float  # label scale, mapped linearly onto [0, 1]
    label_max: float
    positive_threshold: float  # scaled label >= this is a positive for binary metrics
    positive_name: str  # what a positive pair is called in the report, the model card and `pairtune score`
    negative_name: str  # ... and a negative one ("auto": the demo's words on the demo data, else neutral)

    @property
    def is_demo(self) -> bool:
        """Whether the data is the demo generator's (data.dir is data/demo, which `check` keeps consistent)."""
        return _folder(self.dir) == DEMO_DATA

    def check(self, path: str) -> None:
        """Every pair file lies in `dir` (what DVC watches), and a user's own data is never mixed with the demo's:
        one line naming the key, and how to fix it, otherwise."""
        files = [(k, getattr(self, k)) for k in ("train", "dev", "eval") if getattr(self, k)]
        if not self.is_demo:
            for key, value in files:
                if _folder(value).startswith(DEMO_DATA):
                    fix = ' (or "" to split dev off train: prepare.dev_fraction)' if key == "dev" else ""
                    raise PairtuneError(f"{path}: data.{key}: {value} is the demo's pairs while data.dir is "
                                        f"{self.dir}: point it at your own file{fix}")
        for key, value in files:
            if not _folder(value).startswith(_folder(self.dir)):
                raise PairtuneError(f"{path}: data.{key}: {value} is not inside data.dir ({self.dir}), the folder "
                                    f"DVC watches for your pair files: set data.dir to the folder that holds it")


    @property
    def class_names(self) -> tuple[str, str]:
        """(positive, negative) as the report, model card and `pairtune score` say them. "auto" is the demo's
        words only on the demo's data: a user's own pairs get neutral ones until they name theirs."""
        auto = DEMO_NAMES if self.is_demo else NEUTRAL_NAMES
        return (auto[0] if self.positive_name == AUTO_NAME else self.positive_name,
                auto[1] if self.negative_name == AUTO_NAME else self.negative_name)


def _folder(p: str) -> str:
    """A path as a folder prefix: normalised, one trailing slash (data/raw -> data/raw/)."""
    return posixpath.normpath(p.replace("\\", "/")).rstrip("/") + "/"


AUTO_NAME = "auto"
DEMO_DATA = "data/demo/"  # where the generate stage writes the demo pairs (dvc.yaml): never a user's data.dir
DEMO_NAMES = ("compatible", "incompatible")
NEUTRAL_NAMES = ("similar", "dissimilar")


@dataclass(frozen=True)
class Prepare:
    dev_fraction: float  # share of train split off as dev when data.dev is ""
    on_overlap: Literal["error", "drop"]  # a pair present in train and dev/eval


@dataclass(frozen=True)
class Base:
    model: str  # "packaged", a local SentenceTransformer folder, or a hub id
    probe_size: int  # dev texts embedded as the model fingerprint


@dataclass(frozen=True)
class FullMethod:
    """Full fine-tuning: every weight trains."""
    method: Literal["full"]
    lr: Rate  # auto: chosen on dev among tune.<name> by the tune stage


@dataclass(frozen=True)
class LoraMethod:
    """A LoRA adapter (PEFT): rank r on target_modules (roles or module names: pairtune.families)."""
    method: Literal["lora"]
    lr: Rate
    r: int
    alpha: int  # scale alpha / r (rslora: alpha / sqrt(r))
    dropout: float
    target_modules: tuple[str, ...]
    rslora: bool  # rank-stabilised scaling, alpha / sqrt(r): a larger rank is not a smaller step
    dora: bool  # DoRA: a learned magnitude per output row on top of the low-rank direction
    # default: A random, B zero. pissa / olora: A and B start from the weights' principal singular vectors / QR
    # factors, taken out of the base weights; saved as the equivalent rank-2r LoRA on the untouched base
    init: Literal["default", "pissa", "olora"]
    # LoRA+: B's learning rate is lr x this (1: plain LoRA, the stock optimizer)
    loraplus_ratio: float = dataclasses.field(metadata={"range": (1.0, 1000.0)})


@dataclass(frozen=True)
class Ia3Method:
    """IA3 (PEFT): learned vectors that rescale target_modules' outputs (feedforward_modules': their inputs)."""
    method: Literal["ia3"]
    lr: Rate
    target_modules: tuple[str, ...]
    feedforward_modules: tuple[str, ...]  # which targets scale their input: a subset of target_modules


Method = FullMethod | LoraMethod | Ia3Method
METHOD_KINDS: dict[str, type] = {"full": FullMethod, "lora": LoraMethod, "ia3": Ia3Method}
# models/<name>, models/interpolated/<name>, models/export/<name>: a method's name must not be one of these folders
RESERVED_NAMES = ("base", "export", "interpolated")


@dataclass(frozen=True)
class Train:
    epochs: int
    max_steps: int = dataclasses.field(metadata={"range": (0, 10**9)})  # stop after this many (0 = epochs decide)
    batch_size: int
    warmup_steps: int
    scheduler: str  # a transformers lr_scheduler_type
    loss: Literal["cosine", "cosent", "angle", "contrastive", "online_contrastive", "mnrl"]
    checkpoint: Literal["last", "best"]
    device: str  # auto | cpu | cuda | cuda:N
    # Speed knobs (pairtune.hardware decides `auto`; none changes the recipe beyond float rounding):
    bf16: Switch  # bf16 autocast
    packing: Switch  # padding-free forward passes, both columns in one (pairtune.fastpath)
    fast_dropout: Switch  # dropout masks from 16-bit random lanes on CPU (pairtune.fastpath)
    compact_embedding: Switch  # full mode: only the word-embedding rows the train split uses get gradients
    processes: int = dataclasses.field(metadata={"range": (1, 1024)})  # DDP workers (torchrun); 1 = one process
    methods: tuple[str, ...]  # the methods trained and compared, each a section of train; the first is the reference
    # every other key of train: a method section (name -> its kind's dataclass), whether methods lists it or not
    sections: dict[str, Method] = dataclasses.field(metadata={"rest": True})

    def method(self, name: str) -> Method:
        """The section of the method called `name` (train.<name>)."""
        if name not in self.sections:
            raise PairtuneError(f"params.yaml: train.{name}: no such method section (train.methods: "
                                f"{list(self.methods)})")
        return self.sections[name]

    def check(self, path: str, tune: Tune) -> None:
        """What one key cannot say alone: methods name sections, distinct, usable as folder names, each with
        its candidate rates in tune."""
        import re

        if len(set(self.methods)) != len(self.methods):
            raise PairtuneError(f"{path}: train.methods: a method is listed twice: {list(self.methods)}")
        for name in self.methods:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in RESERVED_NAMES:
                raise PairtuneError(f"{path}: train.methods: {name!r} cannot name a method (lowercase letters, digits "
                                    f"and _, not {', '.join(RESERVED_NAMES)}: it names the method's folders)")
            if name not in self.sections:
                raise PairtuneError(f"{path}: train.methods: {name!r} has no section train.{name} (its `method:` "
                                    f"{' | '.join(METHOD_KINDS)} and options)")
            if name not in tune.grids:  # a DVC param of its tune stage, searched or not
                raise PairtuneError(f"{path}: tune.{name}: missing key (the candidate learning rates of train.{name}, "
                                    "searched while its lr is auto)")
        for name in tune.grids:
            if name not in self.sections:  # a typo of a tune key lands here too
                raise PairtuneError(f"{path}: tune.{name}: unknown key (candidate rates need a method section "
                                    f"train.{name})")
        for name, m in self.sections.items():
            if isinstance(m, Ia3Method) and not set(m.feedforward_modules) <= set(m.target_modules):
                raise PairtuneError(f"{path}: train.{name}.feedforward_modules: {list(m.feedforward_modules)} must be "
                                    f"among its target_modules {list(m.target_modules)}")
            if isinstance(m, LoraMethod) and m.init != "default" and m.dora:
                # PEFT turns a PiSSA/OLoRA adapter back into one for the untouched base from A and B alone
                raise PairtuneError(f"{path}: train.{name}.init: {m.init} with dora: true cannot be saved as an "
                                    "adapter of the untouched base (PEFT converts A and B only, not DoRA's magnitude)")


@dataclass(frozen=True)
class Tune:
    """The learning-rate search of train.<mode>.lr: auto (pairtune.tune): successive halving on dev."""
    metric: Literal["auto", "auc", "spearman"]  # what trials are ranked by on dev (auto: AUC binary, Spearman graded)
    budget: float = dataclasses.field(metadata={"range": (0.01, 100.0)})  # all trials' steps / one training run's
    rungs: int = dataclasses.field(metadata={"range": (1, 10)})  # halving rounds: each keeps the better half, 2x steps
    tie: float = _share()  # dev metric within this of the best is a tie: more trial retention, then the smaller lr
    extend: int = dataclasses.field(metadata={"range": (0, 10)})  # rates tried past a grid edge the best sits on
    retries: int = dataclasses.field(metadata={"range": (0, 10)})  # whole runs that came apart on dev, trained again
    retry_factor: float = dataclasses.field(metadata={"range": (0.01, 0.99)})  # ... at this x the rate
    # every other key of tune: a method's candidate learning rates (tune.<name>: [...]); its own key, not a field
    # of train.<name>, so a grid that changes but chooses the same rate retrains nothing (DVC params per stage)
    grids: dict[str, tuple[float, ...]] = dataclasses.field(metadata={"rest": True})

    def grid(self, name: str) -> tuple[float, ...]:
        """The candidate learning rates of method `name`."""
        if name not in self.grids:
            raise PairtuneError(f"params.yaml: tune.{name}: missing key (the candidate rates of train.{name})")
        return self.grids[name]


@dataclass(frozen=True)
class Evaluate:
    batch_size: int
    bootstrap: int
    confidence: float
    recall_target: float  # common operating point: each model's threshold for this recall on dev
    cluster: bool  # UMAP + HDBSCAN cluster purity (~2 s a stage once numba's cache is built)
    cluster_sample: int = dataclasses.field(metadata={"range": (0, 10**9)})  # pairs clustered at most (0 = all)
    cluster_seeds: int = dataclasses.field(metadata={"range": (1, 100)})  # UMAP seeds; purity is their median
    worst_errors: int  # worst false positives and negatives kept per model and pair type
    umap_neighbors: int
    umap_min_dist: float
    hdbscan_min_cluster: int
    hdbscan_min_samples: int


@dataclass(frozen=True)
class Report:
    examples: int  # errors shown per model, kind and pair type in the HTML report
    plateau: float = _share()  # dev-metric change over the last epoch that counts as flat (run diagnosis)


@dataclass(frozen=True)
class General:
    path: str  # general-domain pair file (.jsonl/.csv/.tsv); "" turns the retention check off
    text_1: str  # field / column names, as in `data`
    text_2: str
    label: str
    label_min: float  # label scale, mapped linearly onto [0, 1]
    label_max: float
    positive_threshold: float  # scaled label >= this counts as similar, for the general AUC


@dataclass(frozen=True)
class Interpolate:
    steps: int  # alpha grid: 0, 1/steps, ..., 1
    search: Literal["descend", "grid"]  # which grid points are scored (pairtune.interpolation.descend)
    rule: Literal["auc_drop", "retention"]  # how alpha is chosen (see pairtune.interpolation.choose)
    max_auc_drop: float  # auc_drop: most retention whose dev AUC is within this of the best alpha's
    min_retention: float  # retention: best dev AUC among alphas keeping this share of the base's general Spearman
    grid_pairs: int = dataclasses.field(metadata={"range": (0, 10**9)})  # dev/general pairs per grid point (0 = all)


@dataclass(frozen=True)
class Export:
    opset: int  # ONNX opset of torch's exporter
    exporter: Literal["auto", "torchscript", "dynamo"]  # torch.onnx path (auto: TorchScript, dynamo if it fails)
    int8_method: Int8Method  # how the int8 ONNX is made (pairtune.export.quantize_int8)
    int8_per_channel: bool  # int8 weight scales per output channel (else one per tensor; not weight_only's blocks)
    embed_atol: float  # standalone folder vs the pipeline's embeddings: largest |delta| allowed
    parity_texts: int = dataclasses.field(metadata={"range": (0, 10**9)})  # texts embed_atol is checked on (0 = all)
    onnx_atol: float  # ONNX fp32 vs PyTorch cosines: largest |delta| allowed
    int8_auc_tol: float  # int8 vs fp32 ONNX eval AUC: largest |delta| allowed
    int8_spearman_tol: float  # int8 vs fp32 ONNX eval Spearman: largest |delta| allowed
    strict: bool  # a variant over its tolerance fails the stage (else it is left out and its status says why)
    # which model dvc.yaml's export ships: the operating point interpolate chose on dev + general (chosen)
    # or the model as trained, alpha 1 (tuned)
    operating_point: Literal["chosen", "tuned"]


@dataclass(frozen=True)
class Seeds:
    """Training seeds per method at its chosen operating point (pairtune.seeds): 1 = the pipeline's seed only."""
    n: int = dataclasses.field(metadata={"range": (1, 50)})


@dataclass(frozen=True)
class Params:
    seed: int
    generate: Generate
    data: Data
    prepare: Prepare
    base: Base
    train: Train
    tune: Tune
    evaluate: Evaluate
    report: Report
    export: Export
    general: General
    interpolate: Interpolate
    seeds: Seeds


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml."""
    # ruamel is imported here, not at the top: pairtune.export imports this module, and `pairtune score` on
    # an export folder should not pay for a YAML parser it never uses
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        raw = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PairtuneError(f"{path}: file not found") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise PairtuneError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    return from_dict(raw, path)


def from_dict(raw: Any, path: str | Path = "params.yaml") -> Params:
    """Check a parsed params mapping (also used by tests)."""
    p = _build(Params, raw, str(path), "")
    p.data.check(str(path))
    p.train.check(str(path), p.tune)
    return p


def _build(cls: type, raw: Any, path: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise PairtuneError(f"{path}: {where or 'top level'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    rest = next((f.name for f in dataclasses.fields(cls) if f.metadata.get("rest")), None)
    names = [f.name for f in dataclasses.fields(cls) if f.name != rest]
    unknown = sorted(set(raw) - set(names))
    if unknown and not rest:
        raise PairtuneError(f"{path}: {_key(where, unknown[0])}: unknown key")
    missing = [n for n in names if n not in raw]
    if missing:
        raise PairtuneError(f"{path}: {_key(where, missing[0])}: missing key")
    values = {n: _value(hints[n], raw[n], path, _key(where, n)) for n in names}
    if rest:  # a mapping of names the params choose: train's method sections, tune's grids
        kind = get_args(hints[rest])[1]
        values[rest] = {k: _method(raw[k], path, _key(where, k)) if kind == Method
                        else _value(kind, raw[k], path, _key(where, k)) for k in unknown}
    for f in dataclasses.fields(cls):
        if f.name == rest:
            continue
        lo, hi = f.metadata.get("range", (None, None))
        if lo is not None and not lo <= values[f.name] <= hi:
            raise PairtuneError(f"{path}: {_key(where, f.name)}: {values[f.name]!r} is outside [{lo:g}, {hi:g}]")
    return cls(**values)


def _method(v: Any, path: str, key: str) -> Any:
    """A method section: its `method` key names the kind, whose dataclass checks the rest."""
    kinds = " | ".join(METHOD_KINDS)
    if not isinstance(v, dict) or "method" not in v:
        raise PairtuneError(f"{path}: {key}: unknown key (a method section has a `method: {kinds}` key)")
    if v["method"] not in METHOD_KINDS:
        raise PairtuneError(f"{path}: {key}.method: {v['method']!r} is not one of {kinds.replace(' |', ',')}")
    return _build(METHOD_KINDS[v["method"]], v, path, key)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(tp: Any, v: Any, path: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, path, key)
    origin = get_origin(tp)
    if origin is Literal:
        if v not in get_args(tp):
            choices = ", ".join(map(str, get_args(tp)))
            raise PairtuneError(f"{path}: {key}: {v!r} is not one of {choices}")
        return v
    if origin is tuple and get_args(tp)[0] is float:
        if (not isinstance(v, list) or not v or len(set(v)) != len(v)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)):
            raise PairtuneError(f"{path}: {key}: expected a non-empty list of distinct positive numbers, got {v!r}")
        return tuple(sorted(float(x) for x in v))
    if origin is tuple:
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise PairtuneError(f"{path}: {key}: expected a non-empty list of strings, got {v!r}")
        return tuple(v)
    if origin in (typing.Union, types.UnionType):
        if tp == Switch:
            if isinstance(v, bool) or v == "auto":
                return v
            raise PairtuneError(f"{path}: {key}: expected true, false or auto, got {v!r}")
        if tp == Rate:
            if v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                return v if v == "auto" else float(v)
            raise PairtuneError(f"{path}: {key}: expected a positive learning rate or auto, got {v!r}")
        raise TypeError(f"unsupported param type {tp}")  # pragma: no cover - no other unions
    ok = {
        bool: isinstance(v, bool),
        int: isinstance(v, int) and not isinstance(v, bool),
        float: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: isinstance(v, str),
    }[tp]
    if not ok:
        raise PairtuneError(f"{path}: {key}: expected {tp.__name__}, got {type(v).__name__} {v!r}")
    return float(v) if tp is float else v
