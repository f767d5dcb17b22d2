"""Canonizers: temporary, reversible rewrites of a model that leave its outputs unchanged
but make relevance flow correctly. What every zoo shares lives here; the zoo-specific
canonizers (timm, torchvision blocks and attentions) live in ``zoo_timm`` /
``zoo_torchvision`` and are collected by ``secateurs_lrp.zoos.canonizers_for``.

- ``MergeBatchNorm``: zennit's sequential BatchNorm merge, also zeroing the BatchNorm's
  ``eps`` so the leftover BatchNorm is exactly the identity. zennit 0.5.1 keeps ``eps``
  (the merged model is then off by a factor 1/sqrt(1 + eps)); zennit 1.x records it as
  ``batch_norm_eps`` and zeroes it itself. Both work: ``eps`` is saved before the merge
  and restored after zennit's own removal.
- ``attend``: attention made explicit (q·kᵀ and attn·v as bilinear ε-products, softmax
  with the chosen rule, the probabilities passed through a probe module so heads can be
  read); ``layer_norm_forward``: LayerNorm with its standard deviation treated as a
  constant (so the ε-rule applies to it as to a linear layer).

Every canonizer is a zennit ``Canonizer``: ``apply(model)`` returns instances whose
``remove()`` restores the model exactly. ``canonized(model, canonizers)`` is the context
manager form.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm

from secateurs_lrp.rules import SOFTMAX_MODES, bilinear_matmul, softmax_relevance


class MergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every BatchNorm that directly follows a conv/linear into it (zennit), and
    make the BatchNorm the exact identity by zeroing its ``eps`` until removal."""

    def register(self, linears, batch_norm) -> None:
        self._eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self) -> None:
        super().remove()
        self.batch_norm.eps = self._eps


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, softmax: str, probe: nn.Module
) -> torch.Tensor:
    """``softmax(q kᵀ · scale) v`` for ``[B, H, T, D]`` heads, the probabilities passed
    through ``probe``. ``softmax="gradient"``: plain autograd; otherwise bilinear ε-rules
    and the ``softmax`` relevance rule (``"cp"`` gives attn·v's relevance to both factors)."""
    if softmax == "gradient":
        return probe(torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)) @ v
    shares = (1.0, 1.0) if softmax == "cp" else (0.5, 0.5)
    scores = bilinear_matmul(q, k.transpose(-2, -1), scale=scale)
    return bilinear_matmul(probe(softmax_relevance(scores, softmax)), v, shares)


def layer_norm_forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with a detached standard deviation (the same outputs)."""
    dims = tuple(range(-len(self.normalized_shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    std = (centred.pow(2).mean(dims, keepdim=True) + self.eps).sqrt().detach()
    y = centred / std
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@contextmanager
def canonized(model: nn.Module, canonizers: Sequence[Canonizer]) -> Iterator[nn.Module]:
    """Apply ``canonizers`` to ``model`` for the duration of the block, then revert them."""
    instances: list[Canonizer] = []
    try:
        for canonizer in canonizers:
            instances += canonizer.apply(model)
        yield model
    finally:
        for instance in reversed(instances):
            instance.remove()


class ExplicitViTCanonizer(AttributeCanonizer):
    """A ViT canonizer of one model zoo: explicit attention with the ``softmax`` rule
    (``"attnlrp"``, ``"cp"``, or ``"gradient"`` for plain gradients) and an ``lrp_probe`` on
    the attention probabilities; for relevance only (not ``"gradient"``), the zoo's block
    forward (proportional residual sums) and LayerNorm with a constant std.

    A zoo's subclass gives ``attention_forward(softmax)`` (the explicit attention forward,
    a function of the attention module), ``block_forward`` (a function of the block),
    ``is_block(module)`` and ``attention_attributes(name, module, forward)`` (the attributes
    to set on an attention module of the zoo, ``None`` for other modules).
    """

    def __init__(self, softmax: str = "attnlrp") -> None:
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"unknown softmax rule {softmax!r}; valid: {', '.join(SOFTMAX_MODES)}")
        self.softmax = softmax
        self._attention = self.attention_forward(softmax)
        super().__init__(self._attributes)

    def _attributes(self, name: str, module: nn.Module) -> dict | None:
        attributes = self.attention_attributes(name, module, self._attention)
        if attributes is not None:
            return attributes
        if self.softmax == "gradient":
            return None
        if self.is_block(module):
            return {"forward": self.block_forward.__get__(module)}
        if isinstance(module, nn.LayerNorm):
            return {"forward": layer_norm_forward.__get__(module)}
        return None

    def copy(self) -> ExplicitViTCanonizer:
        return type(self)(self.softmax)

