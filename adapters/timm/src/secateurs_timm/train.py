"""Brief supervised training and top-1 evaluation on Fashion-MNIST (CPU friendly)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from secateurs_timm.data import preprocess, subset


@attrs.frozen
class TrainConfig:
    """``samples`` training images (seeded subset), ``epochs`` passes, AdamW with a
    linear warm-up then cosine decay of ``lr``."""

    samples: int = 6000
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    seed: int = 0


def train(
    model: nn.Module, input_size: tuple[int, int, int], config: TrainConfig, *, progress: bool = True
) -> dict[str, float]:
    """Train ``model`` in place; returns the final training loss and wall seconds."""
    torch.manual_seed(config.seed)
    images, labels = subset("train", config.samples, config.seed)
    x_all = preprocess(images, input_size)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(x_all) / config.batch_size)
    warm = max(1, int(config.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
    )
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    start, loss_avg = time.perf_counter(), float("nan")
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress)
    for _ in range(config.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for idx in order.split(config.batch_size):
            x = x_all[idx].to(device)
            flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips: clothes are symmetric
            x = torch.where(flip.view(-1, 1, 1, 1).to(device), x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            loss_avg = value if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * value
            bar.update()
            bar.set_postfix(loss=f"{loss_avg:.3f}", refresh=False)
    bar.close()
    model.eval()
    return {"train_loss": loss_avg, "train_seconds": time.perf_counter() - start, "train_samples": len(x_all)}


def accuracy(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    samples: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    forward=None,
) -> float:
    """Top-1 accuracy on ``samples`` Fashion-MNIST test images (all 10,000 if None).
    ``forward(model, x)`` defaults to calling the model."""
    images, labels = subset("test", samples, seed)
    batches = (
        (preprocess(images[lo : lo + batch_size], input_size), labels[lo : lo + batch_size])
        for lo in range(0, len(images), batch_size)
    )
    return top1(model, batches, forward)


def top1(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], forward=None) -> float:
    """The fraction of ``(images, labels)`` samples whose highest logit is the label (no grad)."""
    param = next(model.parameters())
    correct = total = 0
    with torch.no_grad():
        for images, labels in batches:
            x = images.to(param.device, param.dtype)
            logits = model(x) if forward is None else forward(model, x)
            correct += int((logits.argmax(-1).cpu() == labels).sum())
            total += len(labels)
    return correct / total
