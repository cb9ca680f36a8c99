"""Train a SentenceTransformer on pairs: full fine-tuning or LoRA, same data, loss and schedule.

Uses sentence-transformers' SentenceTransformerTrainer (not the legacy `fit`); the only difference
between the two modes is which weights train and the learning rate.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pairtune import hardware
from pairtune.errors import PairtuneError
from pairtune.hardware import Knobs
from pairtune.params import Train

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

BINARY_LOSSES = ("contrastive", "online_contrastive", "mnrl")


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float
    wall_s: float
    best_dev_spearman: float | None
    packed: bool  # what pairtune.fastpath actually ran (packing falls back to stock on models it cannot check)
    fast_dropout: bool
    compact_embedding: bool
    bf16: bool
    pretokenized: bool  # each step's batch assembled from token ids stored up front (pairtune.fastpath)
    dev: tuple[dict[str, float], ...] = ()  # dev AUC and Spearman at each epoch's end (epoch_eval), in order


def _one_pass(cls: type) -> type:
    """`cls` with every column of a batch embedded in one forward pass instead of the first on its own.

    Each of our losses is `embed_columns` + `compute_loss_from_embeddings`; sentence-transformers keeps the
    first column apart because padding columns to one width costs, which packed batches do not pay.
    """
    from sentence_transformers.base.losses.merged_forward import embed_columns

    def forward(self: Any, sentence_features: Any, labels: Any, *args: Any, **kwargs: Any) -> Any:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features, separate_first=False),
                                                 labels)

    return type(cls.__name__, (cls,), {"forward": forward, "__module__": __name__})


def build_loss(name: str, model: SentenceTransformer, binary: bool, one_pass: bool = False,
               gather: bool = False) -> Any:
    """The loss named by `train.loss`; a loss that needs binary labels refuses graded ones. `gather`: under DDP,
    in-batch negatives (mnrl) come from every worker's share of the batch, as in one process."""
    from sentence_transformers.sentence_transformer import losses

    if name in BINARY_LOSSES and not binary:
        raise PairtuneError(f"params.yaml: train.loss: {name!r} needs binary 0/1 labels, but the data is graded; "
                            "use cosine, cosent or angle")
    cls = {
        "cosine": losses.CosineSimilarityLoss,
        "cosent": losses.CoSENTLoss,
        "angle": losses.AnglELoss,
        "contrastive": losses.ContrastiveLoss,
        "online_contrastive": losses.OnlineContrastiveLoss,
        "mnrl": losses.MultipleNegativesRankingLoss,
    }[name]
    kwargs = {"gather_across_devices": True} if gather and name == "mnrl" else {}
    return (_one_pass(cls) if one_pass else cls)(model, **kwargs)


def unused_parameters(model: SentenceTransformer, texts: list[str]) -> list[str]:
    """Trainable parameters the sentence embedding of `texts` gets no gradient into (one backward pass in
    eval mode: no dropout, so the random streams of training are untouched)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in model.preprocess(texts).items()}
    model(features)["sentence_embedding"].float().sum().backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return names


def to_dataset(pairs: list[dict[str, Any]], loss: str) -> Any:
    """A datasets.Dataset in the column layout the loss expects."""
    from datasets import Dataset

    if loss == "mnrl":  # in-batch negatives: positives only, no label column
        pos = [p for p in pairs if p["label"] == 1.0]
        return Dataset.from_dict({"anchor": [p["text_1"] for p in pos], "positive": [p["text_2"] for p in pos]})
    return Dataset.from_dict({"sentence1": [p["text_1"] for p in pairs], "sentence2": [p["text_2"] for p in pairs],
                              "label": [float(p["label"]) for p in pairs]})


def dev_evaluator(dev: list[dict[str, Any]], positive_threshold: float) -> Any:
    """Dev Spearman and AUC each epoch: for the training curves and for best-checkpoint choice (never eval)."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    from pairtune import metrics
    from pairtune.evaluation import unique_texts
    from pairtune.models import embed

    graded = np.array([p["label"] for p in dev])
    y = (graded >= positive_threshold).astype(int)
    texts = unique_texts(dev)
    index = {t: i for i, t in enumerate(texts)}

    class DevEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = "dev"
            self.primary_metric = "spearman"

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1,
                     ) -> dict[str, float]:
            cos = metrics.pair_scores(embed(model, texts, invariant=False), index, dev)
            scores = {"spearman": metrics.spearman(cos, graded), "auc": metrics.auc(cos, y)}
            return self.prefix_name_to_metrics(scores, self.name)

    return DevEvaluator()


def b_lr_ratio(spec: Any) -> float:
    """How much faster a method's LoRA B matrices learn than the rest (LoRA+); 1 for every other method."""
    return float(getattr(spec, "loraplus_ratio", 1.0))


def loraplus(model: SentenceTransformer, lr: float, ratio: float) -> tuple[Any, None]:
    """The trainer's (optimizer, scheduler): for ratio 1 none given (the trainer's own fused AdamW); else PEFT's
    LoRA+ optimizer, the same fused AdamW with B matrices (and DoRA's magnitudes) at lr x ratio. The scheduler
    stays the trainer's: it scales every group's rate alike, so the ratio holds through warm-up and decay."""
    if ratio == 1.0:
        return None, None
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model[0].model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio,
                                     weight_decay=0.0, fused=True), None


def steps_per_epoch(n_pairs: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last partial batch counts)."""
    return math.ceil(n_pairs / batch_size)


def train(model: SentenceTransformer, train_pairs: list[dict[str, Any]], dev_pairs: list[dict[str, Any]],
          cfg: Train, lr: float, seed: int, device: str, binary: bool, positive_threshold: float,
          knobs: Knobs, callbacks: list[Any] | None = None, epoch_eval: bool = True, b_ratio: float = 1.0,
          ) -> TrainResult:
    """Train `model` in place with the stock trainer; returns what the metrics file needs.

    `knobs`: the speed knobs as pairtune.hardware decided them for this machine (`cfg`'s may say auto).
    `epoch_eval`: score dev at each epoch's end (the curves; a tune trial is scored once, by its caller).
    `b_ratio`: LoRA+ (`b_lr_ratio`): LoRA B matrices learn at lr x this, through PEFT's LoRA+ optimizer.
    """
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from pairtune import distributed, fastpath

    dataset = to_dataset(train_pairs, cfg.loss)
    best = cfg.checkpoint == "best"
    check = [p[key] for p in train_pairs[:16] for key in ("text_1", "text_2")]
    _, workers = distributed.world()
    per_worker = distributed.check_batch(cfg.batch_size, workers)
    if workers > 1:
        # DDP all-reduces every trainable parameter each step and fails on one that got no gradient ("Expected
        # to have finished reduction"); its per-step search for such parameters costs. Parameters the sentence
        # embedding never uses (BERT's pooler under mean pooling) are frozen instead: exact, since they would
        # get zero gradients, and AdamW without weight decay never moves a parameter with zero gradients.
        for name in unused_parameters(model, check[:4]):
            model.get_parameter(name).requires_grad_(False)
            log.info("DDP: %s gets no gradient from the sentence embedding: frozen", name)
    compact = None
    if knobs.compact_embedding:
        if best:  # a checkpoint reload during training would meet the swapped-in module
            log.warning("compact embedding off: train.checkpoint is best")
        else:
            compact = [p[key] for p in train_pairs for key in ("text_1", "text_2")]
    with (fastpath.enabled(model, knobs.packing, knobs.fast_dropout, check, compact) as active,
          tempfile.TemporaryDirectory(prefix="pairtune-train-") as out):
        log.info("fast path: bf16 autocast %s, packing %s, cheap CPU dropout %s, compact embedding %s",
                 knobs.bf16, active.packed, active.fast_dropout, active.compact_embedding)
        loss = build_loss(cfg.loss, model, binary, one_pass=active.packed, gather=workers > 1)
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,  # -1: transformers' 'no limit', epochs decide
            per_device_train_batch_size=per_worker,  # the global batch is cfg.batch_size whatever the workers
            per_device_eval_batch_size=64,
            learning_rate=lr,
            warmup_steps=cfg.warmup_steps,
            lr_scheduler_type=cfg.scheduler,
            seed=seed,
            data_seed=seed,
            bf16=knobs.bf16,
            weight_decay=0.0,  # the compact embedding is exact only without weight decay (pairtune.fastpath)
            # Fused AdamW: the same update in one kernel per tensor; 409 vs 495 ms a step for full fine-tuning
            # on the 2-core CPU (bench/), and supported on CUDA as well.
            optim="adamw_torch_fused",
            use_cpu=device == "cpu",
            ddp_backend=None if workers == 1 else "gloo" if device == "cpu" else "nccl",
            ddp_find_unused_parameters=False,
            eval_strategy="epoch" if epoch_eval or best else "no",
            save_strategy="epoch" if best else "no",
            save_total_limit=1 if best else None,
            load_best_model_at_end=best,
            metric_for_best_model="eval_dev_spearman" if best else None,
            greater_is_better=True,
            logging_steps=10,
            report_to="none",
            disable_tqdm=False,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             evaluator=dev_evaluator(dev_pairs, positive_threshold),
                                             callbacks=callbacks or [], optimizers=loraplus(model, lr, b_ratio))
        pre = fastpath.pretokenized(model, [p[key] for p in train_pairs for key in ("text_1", "text_2")],
                                    [check[0::2], check[1::2]])
        if pre is not None:
            trainer.data_collator.preprocess_fn = pre
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
        # With bf16, accelerate leaves forward() wrapped in autocast: the probe would be embedded in bf16 while
        # the saved fp32 weights reload in fp32 (the load guard caught this: max |delta| 6e-4). Unwrap it.
        trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        history = trainer.state.log_history
    losses_seen = [h["loss"] for h in history if "loss" in h]
    dev = tuple({"auc": float(h["eval_dev_auc"]), "spearman": float(h["eval_dev_spearman"])}
                for h in history if "eval_dev_auc" in h)
    best_metric = trainer.state.best_metric if best else None
    return TrainResult(steps=output.global_step, final_loss=float(losses_seen[-1] if losses_seen else output.training_loss),
                       wall_s=wall, best_dev_spearman=best_metric, packed=active.packed,
                       fast_dropout=active.fast_dropout, compact_embedding=active.compact_embedding,
                       bf16=knobs.bf16, pretokenized=pre is not None, dev=dev)


def plain_live(live_dir: str) -> Any:
    """A DVCLive logger that only writes files: curves are declared as plots in dvc.yaml by hand.

    DVCLive's own git/DVC integration is skipped: it saves no experiment we want, and in a git repo with no
    commit yet (a fresh `git init`) dvclive 3.49 crashes in it ("Empty git repo").
    """
    from dvclive import Live

    class PlainLive(Live):
        def _init_dvc(self) -> None:
            return None

    return PlainLive(live_dir, dvcyaml=None, save_dvc_exp=False, report=None)


def live_callback(live: Any) -> Any:
    """A TrainerCallback that logs training loss per logging step and dev metrics per epoch to DVCLive.

    Not dvclive's own (deprecated) callback: that one also logs the trainer arguments, temp paths included,
    and the runtimes, which would make identical runs write different files.
    """
    from transformers import TrainerCallback

    class LiveCallback(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            logs = logs or {}
            wanted = {"loss": "train/loss", "learning_rate": "train/learning_rate",
                      "eval_dev_spearman": "dev/spearman", "eval_dev_auc": "dev/auc"}
            picked = {name: logs[key] for key, name in wanted.items() if key in logs}
            if picked:
                live.step = state.global_step
                for name, value in picked.items():
                    live.log_metric(name, round(float(value), 6), plot=True)
                live.make_summary()

    return LiveCallback()


def chosen_lr(mode: str, configured: float | str, record: dict[str, Any] | None) -> float:
    """The learning rate the train stage uses: the configured number, or for auto the tune stage's choice."""
    if configured != "auto":
        return float(configured)
    if record is None or not record.get("searched"):
        raise PairtuneError(f"params.yaml: train.{mode}.lr: auto, but no search result was given (the tune stage "
                            f"writes it: dvc repro tune@{mode})")
    return float(record["lr"])


def start(mode: str, p: Any, base_dir: str, base: SentenceTransformer | None = None,
          ) -> tuple[SentenceTransformer, str, Knobs, hardware.Machine]:
    """The verified base on this worker's device, seeded, with a fresh adapter unless the method is full
    fine-tuning, and the speed knobs as decided for this machine: where every training run (the train stage's,
    a tune trial) begins.
    `base`: an already verified base to copy (tune's trials load it once), instead of loading `base_dir`."""
    import copy

    from transformers import set_seed

    from pairtune import distributed, models

    device = distributed.local_device(models.pick_device(p.train.device))
    model = copy.deepcopy(base) if base is not None else models.load_model(base_dir, device)
    set_seed(p.seed)
    spec = p.train.method(mode)
    if spec.method != "full":
        models.add_adapter(model, spec, p.seed, f"train.{mode}")
    mach = hardware.machine(device)
    return model, device, hardware.resolve(p.train, mach, spec.method), mach


def train_mode(mode: str, p: Any, train_pairs: list[dict[str, Any]], dev_pairs: list[dict[str, Any]],
               binary: bool, base_dir: str, out: Any, live_dir: str | None, lr: float | None = None,
               ) -> dict[str, Any]:
    """Load the verified base, train it in `mode` at `lr` (None: train.<mode>.lr, which must then be a number),
    write the model folder `out`; return the train metrics."""
    import json
    from pathlib import Path

    from pairtune import distributed, models

    out = Path(out)
    kind = p.train.method(mode).method
    lr = chosen_lr(mode, p.train.method(mode).lr, None) if lr is None else lr
    model, device, knobs, mach = start(mode, p, base_dir)
    trainable, total = models.count_params(model)
    log.info("%s: %d trainable of %d parameters (%.2f%%) on %s, lr %g", mode, trainable, total,
             100 * trainable / total, mach.describe(), lr)
    callbacks = []
    if live_dir:
        live = plain_live(live_dir)
        callbacks.append(live_callback(live))
    result = train(model, train_pairs, dev_pairs, p.train, lr, p.seed, device, binary,
                   p.data.positive_threshold, knobs, callbacks, b_ratio=b_lr_ratio(p.train.method(mode)))
    if live_dir:
        live.end()
    base_dir = Path(base_dir)
    texts = json.loads((base_dir / models.PROBE_TEXTS).read_text(encoding="utf-8"))
    probe = models.embed_probe(model, texts)  # on the CPU, where every later check runs
    if kind != "full":
        models.save_adapter(model, out, p.base.model)
        artifact = [models.ADAPTER_WEIGHTS, models.ADAPTER_CONFIG]
    else:
        models.save_full(model, out)
        artifact = None
    size = models.folder_bytes(out, artifact)
    # the manifest's mode is the method's kind (full, lora, ia3): what a loader needs, whatever params calls it
    manifest = {"mode": kind, "base_model": p.base.model, "loss": p.train.loss,
                **models.recipe_notes(p.train.method(mode))}
    models.write_fingerprint(out, manifest, texts, probe, np.load(base_dir / models.PROBE))
    log.info("%s: %d steps in %.1f s, final loss %.4f, artifact %.2f MB", mode, result.steps, result.wall_s,
             result.final_loss, size / 1e6)
    metrics = {"trainable_params": trainable, "total_params": total,
               "trainable_share": round(trainable / total, 6), "artifact_bytes": size, "steps": result.steps,
               "final_loss": round(result.final_loss, 6), "train_wall_s": round(result.wall_s, 2),
               "device_cuda": int(device.startswith("cuda")), "packed": int(result.packed),
               "fast_dropout": int(result.fast_dropout), "compact_embedding": int(result.compact_embedding),
               "pretokenized": int(result.pretokenized),
               "bf16": int(result.bf16), "native_bf16": int(mach.native_bf16), "machine": mach.describe(), "lr": lr,
               "processes": distributed.world()[1]}
    if result.best_dev_spearman is not None:
        metrics["best_dev_spearman"] = round(result.best_dev_spearman, 6)
    # the dev curve up to the model as kept: the last epoch, or under checkpoint best the best dev Spearman's
    dev = list(result.dev)
    if p.train.checkpoint == "best" and dev:
        dev = dev[:max(range(len(dev)), key=lambda i: dev[i]["spearman"]) + 1]
    metrics["dev"] = [{k: round(v, 6) for k, v in e.items()} for e in dev]  # not in train.json (DVCLive has it)
    return metrics


def came_apart(curve: list[float], margin: float) -> bool:
    """Whether a run's dev curve (one figure an epoch, up to the model kept) ends more than `margin` below its
    first epoch. A run at a workable rate improves on its first epoch; one that ends under it diverged. The short
    tune trials cannot see this (LoRA+ on the harder demo: its 69-step trial at 2e-3 was the best, the whole
    run reached 0.79 dev AUC after epoch 1 and ended at 0.66; bench/methods.json), and interpolation cannot buy
    it back. Of the 19 whole runs whose curves the DVC cache held on 2026-12-07 (eight methods, the demo and the
    harder demo), that one alone ended below its first epoch (-0.131); the others ended 0.008 to 0.097 above it
    (docs/results.md)."""
    return len(curve) > 1 and curve[-1] < curve[0] - margin


def train_checked(mode: str, p: Any, train_pairs: list[dict[str, Any]], dev_pairs: list[dict[str, Any]],
                  binary: bool, base_dir: str, out: Any, live_dir: str | None, lr: float, metric: str,
                  ) -> dict[str, Any]:
    """`train_mode` at the searched rate `lr`, checked at full length: a run that came apart on dev
    (`came_apart`, margin tune.tie, dev `metric`) is trained again at tune.retry_factor x its rate, up to
    tune.retries times, and the run that ends higher on dev is kept in `out` and `live_dir` (dev only: eval is
    never read). The metrics say so under `retried` (every run: lr, first and last dev figure); `train_wall_s` is
    every run's, what the user waited for."""
    import shutil
    from pathlib import Path

    from pairtune import distributed

    runs = [(Path(out), live_dir, train_mode(mode, p, train_pairs, dev_pairs, binary, base_dir, out, live_dir, lr))]
    if distributed.world()[1] > 1:  # the other workers cannot follow a retry: DDP runs once, as searched
        return runs[0][2]

    def curve(m: dict[str, Any]) -> list[float]:
        return [e[metric] for e in m["dev"]]

    with tempfile.TemporaryDirectory(prefix=".retry-", dir=Path(out).parent) as scratch:
        rate = lr
        for i in range(1, p.tune.retries + 1):
            last = curve(runs[-1][2])
            if not came_apart(last, p.tune.tie):
                break
            rate = float(f"{rate * p.tune.retry_factor:.3g}")
            log.warning("%s: the whole run at lr %g came apart on dev (%s %.4f after the first epoch, %.4f at the "
                        "end): training again at lr %g (tune.retries)", mode, runs[-1][2]["lr"], metric, last[0],
                        last[-1], rate)
            folder, live = Path(scratch) / f"model{i}", Path(scratch) / f"live{i}"
            live_i = str(live) if live_dir else None
            runs.append((folder, live_i,
                         train_mode(mode, p, train_pairs, dev_pairs, binary, base_dir, folder, live_i, rate)))
        if len(runs) == 1:
            return runs[0][2]
        keep = max(range(len(runs)), key=lambda i: (curve(runs[i][2])[-1], i))  # a tie: the lower rate
        folder, live, metrics = runs[keep]
        if keep:
            for child in Path(out).iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            for child in folder.iterdir():
                shutil.move(child, Path(out) / child.name)
            if live_dir and live:
                shutil.rmtree(live_dir, ignore_errors=True)
                shutil.move(live, live_dir)
    log.warning("%s: kept the run at lr %g (dev %s %.4f at the end)", mode, metrics["lr"], metric, curve(metrics)[-1])
    return {**metrics, "train_wall_s": round(sum(r[2]["train_wall_s"] for r in runs), 2), "searched_lr": lr,
            "retried": [{"lr": r[2]["lr"], f"dev_{metric}_first": curve(r[2])[0], f"dev_{metric}_end": curve(r[2])[-1]}
                        for r in runs]}
