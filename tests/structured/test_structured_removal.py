"""Generic structured removal: zero and remove give the same outputs; modules shrink."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.structured import component_view, remove_components, zero_components
from secateurs.types import Group, ParamSlice


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def groups(self):
        return [Group("n", "neurons", 16, (ParamSlice(self.fc1, "weight", 0), ParamSlice(self.fc2, "weight", 1)))]

    def inputs(self):
        return torch.randn(5, 8)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))

    def groups(self):
        slices = (
            ParamSlice(self.conv1, "weight", 0),
            ParamSlice(self.bn, "weight", 0),
            ParamSlice(self.conv2, "weight", 1),
        )
        return [Group("c", "channels", 6, slices)]

    def inputs(self):
        return torch.randn(2, 3, 8, 8)


class FusedAttention(nn.Module):
    """Self-attention with one fused qkv projection (timm layout), heads of width 4."""

    def __init__(self, dim: int = 8, heads: int = 4, head_dim: int = 4) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.qkv, self.proj = nn.Linear(dim, 3 * heads * head_dim), nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def groups(self):
        width = self.proj.in_features
        qkv = tuple(ParamSlice(self.qkv, p, 0, i * width, width) for i in range(3) for p in ("weight", "bias"))
        return [Group("h", "heads", width // self.head_dim, (*qkv, ParamSlice(self.proj, "weight", 1)))]

    def inputs(self):
        return torch.randn(2, 5, 8)


MODELS = [Mlp, ConvNet, FusedAttention]


def keep_of(group: Group, seed: int = 0) -> torch.Tensor:
    keep = torch.rand(group.size, generator=torch.Generator().manual_seed(seed)) > 0.5
    keep[0] = True
    keep[1] = False
    return keep


@pytest.mark.parametrize("factory", MODELS)
def test_zero_and_remove_agree(factory):
    torch.manual_seed(0)
    model = factory().eval()
    x = model.inputs()
    zeroed, removed = copy.deepcopy(model), copy.deepcopy(model)
    for g in zeroed.groups():
        zero_components(g, keep_of(g))
    groups = removed.groups()
    remove_components([(g, keep_of(g)) for g in groups])
    with torch.no_grad():
        torch.testing.assert_close(removed(x), zeroed(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(zeroed(x), model(x))
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("factory", MODELS)
def test_removal_keeps_module_identity_and_syncs_sizes(factory):
    model = factory()
    before = dict(model.named_modules())
    group = model.groups()[0]
    keep = keep_of(group)
    touched = remove_components([(group, keep)])
    assert dict(model.named_modules()) == before
    assert touched
    for module in touched:
        if isinstance(module, nn.Linear):
            assert (module.out_features, module.in_features) == tuple(module.weight.shape)
            if module.bias is not None:
                assert module.bias.shape[0] == module.out_features
        if isinstance(module, nn.Conv2d):
            assert (module.out_channels, module.in_channels) == tuple(module.weight.shape[:2])
        if isinstance(module, nn.BatchNorm2d):
            assert module.num_features == module.running_mean.shape[0] == module.running_var.shape[0] == int(keep.sum())
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())


def test_fused_slices_are_cut_together():
    attn = FusedAttention(heads=4)
    group = attn.groups()[0]
    keep = torch.tensor([True, False, True, False])
    expected = [component_view(group, s)[keep] for s in group.slices]
    remove_components([(group, keep)])
    assert attn.qkv.weight.shape == (3 * 2 * 4, 8) and attn.proj.weight.shape == (8, 8)
    shrunk = attn.groups()[0]
    assert shrunk.size == 2
    for before, s in zip(expected, shrunk.slices, strict=True):
        torch.testing.assert_close(component_view(shrunk, s), before)


def test_component_view_honours_start_and_length():
    lin = nn.Linear(2, 6)
    group = Group("g", "heads", 2, (ParamSlice(lin, "weight", 0, start=2, length=4),))
    torch.testing.assert_close(component_view(group, group.slices[0]), lin.weight.detach()[2:6].reshape(2, 4))
    zero_components(group, torch.tensor([True, False]))
    assert lin.weight[4:6].abs().sum() == 0 and lin.bias[4:6].abs().sum() == 0
    assert lin.weight[:4].abs().sum() > 0


@pytest.mark.parametrize(
    "keep, message",
    [(torch.zeros(16, dtype=torch.bool), "keep at least one"), (torch.ones(3, dtype=torch.bool), "expected")],
)
def test_bad_keep_is_refused_before_anything_changes(keep, message):
    model = Mlp()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(SecateursError, match=message):
        remove_components([(model.groups()[0], keep)])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_remove_follows_the_tensors_device_and_dtype():
    model = Mlp().to(torch.float64)
    group = model.groups()[0]
    remove_components([(group, keep_of(group))])
    assert model.fc1.weight.dtype == torch.float64 and model.fc1.weight.device.type == "cpu"
