"""``nn.MultiheadAttention`` made explicit, for torchvision's ViT.

PyTorch's attention keeps its fused input projection as bare parameters and never calls
its ``out_proj`` module (it reads the weight), so neither projection's inputs can be
observed; and it derives ``head_dim`` from ``embed_dim // num_heads``, so heads cannot be
removed. ``ExplicitMultiheadAttention`` is a subclass that holds the same projection as
an ``in_proj`` linear (state keys ``in_proj.weight`` / ``in_proj.bias`` instead of
``in_proj_weight`` / ``in_proj_bias``, which stay readable as properties), computes the
same self-attention with the stored ``head_dim``, calls both projections as modules, and
whose head count follows its tensors. ``make_explicit(model)`` switches a model's
attentions to it in place (idempotent, the parameters themselves are kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.errors import SecateursError


class ExplicitMultiheadAttention(nn.MultiheadAttention):
    """Batch-first, unmasked self-attention: ``forward(x, x, x, need_weights=False)`` →
    ``(out, None)``."""

    in_proj: nn.Linear

    @property
    def in_proj_weight(self) -> torch.Tensor:
        return self.in_proj.weight

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        return self.in_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if not (query is key is value) or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise SecateursError("the explicit attention computes unmasked self-attention only (query is key is value)")
        if need_weights:
            raise SecateursError(
                "the explicit attention does not return attention weights; call it with need_weights=False"
            )
        batch, tokens, _ = query.shape
        qkv = self.in_proj(query)
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)), None

    def sync(self) -> None:
        """The head count from the fused projection's rows (heads are removed whole)."""
        rows = self.in_proj.weight.shape[0]
        if rows % (3 * self.head_dim):
            raise SecateursError(f"attention projection of {rows} rows is not 3 x whole heads of {self.head_dim}")
        self.num_heads = rows // (3 * self.head_dim)


def make_explicit(model: nn.Module) -> None:
    """Switch every ``nn.MultiheadAttention`` of ``model`` to ``ExplicitMultiheadAttention``
    (same parameter objects, same outputs); refuses layouts it does not reproduce."""
    for name, module in model.named_modules():
        if type(module) is not nn.MultiheadAttention:
            continue
        if not (module.batch_first and module._qkv_same_embed_dim) or module.bias_k is not None:
            raise SecateursError(
                f"{name}: only batch-first attention with a fused input projection and no bias_k/v is supported"
            )
        weight = module._parameters.pop("in_proj_weight")
        bias = module._parameters.pop("in_proj_bias")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight = weight
        linear.bias = bias
        module.__class__ = ExplicitMultiheadAttention
        module.in_proj = linear
