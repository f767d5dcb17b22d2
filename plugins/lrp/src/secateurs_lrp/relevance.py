"""Collecting attributions at layer outputs: LRP relevance and Taylor (activation × gradient).

``collect`` runs the model batch by batch on a labelled reference set, starts the
backward pass at the logits with ``seed(logits, labels)``, and reads the tensor that
flows back into each probed module's output: with an LRP composite registered that is
the relevance ``R`` of the output (zennit's convention), without one the gradient (then
multiplied by the activation for Taylor). Each read is reduced to one value per
component (channel dimension 1 for 4-D outputs: conv channels, attention heads; the last
dimension otherwise: neurons, summed over tokens), and ``|·|`` is summed over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.errors import SecateursError

Batch = tuple[torch.Tensor, torch.Tensor]
Seed = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def one_hot_seed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Relevance 1 at each sample's true class (LRP's starting point)."""
    return F.one_hot(labels, logits.shape[-1]).to(logits.dtype)


def loss_seed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed cross-entropy w.r.t. the logits (Taylor's criterion)."""
    return torch.softmax(logits.detach(), -1) - one_hot_seed(logits, labels)


def reduce_components(t: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` → ``[B, C]``: sum over every dimension but the batch and the component
    dimension (1 for 4-D tensors, the last otherwise)."""
    if t.dim() == 4:
        return t.sum(dim=(2, 3))
    if t.dim() == 2:
        return t
    return t.sum(dim=tuple(range(1, t.dim() - 1)))


def reference_set(
    batches: Sequence[Any], samples_per_class: int, classes: int, batch_size: int
) -> list[Batch]:
    """The first ``samples_per_class`` samples of every class the labelled calibration
    ``batches`` (``(images, labels)`` pairs) hold among the model's ``classes`` (an image
    folder of a few classes scores a 1000-class model on those), re-batched."""
    if not batches:
        raise SecateursError("the reference set is empty: give the recipe a labelled [calibration] source (images)")
    labelled = all(
        isinstance(b, tuple | list) and len(b) == 2 and isinstance(b[1], torch.Tensor) and b[1].dim() == 1
        and not b[1].is_floating_point() and len(b[1]) == len(b[0])
        for b in batches
    )
    if not labelled:
        raise SecateursError(
            "attribution scorers need labelled calibration batches (images, labels); "
            "use the 'images' calibration source"
        )
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches]).long()
    inside = (labels >= 0) & (labels < classes)
    counts = torch.bincount(labels[inside], minlength=classes)
    if not inside.any():
        raise SecateursError(f"no calibration label is a class of the model (0..{classes - 1})")
    short = ((counts > 0) & (counts < samples_per_class)).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise SecateursError(
            f"the reference set has {int(counts[c])} samples of class {c} but {samples_per_class} per class "
            f"were requested ({len(labels)} calibration samples of {int((counts > 0).sum())} classes); raise the "
            f"calibration source's nsamples (or give it more images of that class) or lower the scorer's "
            f"samples_per_class"
        )
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    rank = torch.arange(len(labels)) - torch.searchsorted(sorted_labels, sorted_labels)  # index within its class
    keep = order[(rank < samples_per_class) & inside[order]]
    keep = keep.sort().values  # calibration order, classes mixed in every batch
    return list(zip(images[keep].split(batch_size), labels[keep].split(batch_size), strict=True))


@contextmanager
def _capture(modules: Mapping[str, nn.Module], outputs: dict[str, torch.Tensor]) -> Iterator[None]:
    """Keep each module's latest output (when it is part of the autograd graph)."""

    def hook_for(name: str):
        def forward_hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                outputs[name] = output

        return forward_hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def collect(
    model: nn.Module,
    batches: Sequence[Batch],
    probes: Callable[[nn.Module], Mapping[str, nn.Module]],
    *,
    context: Callable[[nn.Module], AbstractContextManager],
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    seed: Seed = one_hot_seed,
    times_activation: bool = False,
) -> dict[str, torch.Tensor]:
    """Per probe name, ``Σ_samples |reduced read|`` (float32 on CPU).

    ``context(model)`` (a composite's context: canonizers + rules) is entered first;
    ``probes(model)`` is called inside it (canonizers may add probe modules) and returns
    name → module whose output is read; ``forward(model, images)`` gives the logits. The
    backward pass runs from the logits down to the earliest probed output only (no input
    or parameter gradients). The model is put in eval mode for the pass and its mode
    restored after.
    """
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    try:
        with context(model), torch.enable_grad():
            with _capture(probes(model), outputs):
                for images, labels in batches:
                    outputs.clear()
                    x = images.to(param.device, param.dtype)
                    logits = forward(model, x)
                    names = list(outputs)
                    start = seed(logits, labels.to(logits.device))
                    grads = torch.autograd.grad(logits, [outputs[n] for n in names], start, allow_unused=True)
                    for name, grad in zip(names, grads, strict=True):
                        if grad is None:
                            continue
                        values = grad * outputs[name].detach() if times_activation else grad
                        per_component = reduce_components(values).abs().sum(0).float()
                        sums[name] = sums[name] + per_component if name in sums else per_component
    finally:
        model.train(was_training)
    return {name: s.cpu() for name, s in sums.items()}


def conservation(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    context: Callable[[nn.Module], AbstractContextManager],
    entry: nn.Module | None = None,
) -> torch.Tensor:
    """Per sample: the relevance reaching the input divided by the output relevance (1
    per sample, LRP's starting point). For a transformer the input is the token sequence
    entering ``entry``, its first block (default: ``model.blocks[0]`` when the model has
    ``blocks``, as timm's ViT): the class token and position embedding are parameters, so
    the relevance they keep never reaches the image."""
    x = images.detach().clone().requires_grad_(True)
    store: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple) -> None:
        args[0].retain_grad()
        store["tokens"] = args[0]

    blocks = getattr(model, "blocks", None)
    entry = entry if entry is not None else (blocks[0] if blocks is not None else None)
    handle = entry.register_forward_pre_hook(keep) if entry is not None else None
    try:
        with context(model), torch.enable_grad():
            logits = model(x)
            start = one_hot_seed(logits, labels)
            logits.backward(start)
    finally:
        if handle is not None:
            handle.remove()
    reached = store["tokens"].grad if handle is not None else x.grad
    return reached.flatten(1).sum(1).detach() / start.sum(1)
