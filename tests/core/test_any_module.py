"""Any ``nn.Module``: unstructured pruning of its Linear/Conv weights through the generic
``module`` adapter, from Python and from a recipe (``model = "file.py:factory"``)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import load_model
from torch import nn

import secateurs
from secateurs.errors import SecateursError
from secateurs.loading import find_adapter

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        '''A small convnet no adapter knows (norms, a residual, a pooled head).'''

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = nn.BatchNorm2d(8)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.norm(self.stem(x)))
            x = x + torch.relu(self.conv(x))
            return self.head(x.mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return Net().eval()
    """
)
WEIGHTS = ("stem.weight", "conv.weight", "head.weight")


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def _net(factory):
    return secateurs.loading.build_from_factory(f"{factory}:build")


def _images(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 8, 8, generator=gen) for _ in range(n)]


def _zeros(model: nn.Module) -> dict[str, float]:
    params = dict(model.named_parameters())
    return {name: float((params[name] == 0).float().mean()) for name in WEIGHTS}


@pytest.mark.parametrize("scorer", ["magnitude", "random", "wanda"])
def test_an_unknown_module_prunes_from_python(factory, scorer):
    net = _net(factory)
    with pytest.warns(UserWarning, match="no architecture adapter knows Net; pruning it with the generic 'module'"):
        outcome = secateurs.prune(
            {"scorer": scorer, "sparsity": 0.5}, model=net, calibration=_images(), progress=False
        )
    assert outcome.loaded.model is net
    assert _zeros(net) == pytest.approx(dict.fromkeys(WEIGHTS, 0.5), abs=0.02)  # rows of 27 keep 14
    assert not net.norm.weight.eq(0).any()  # only Linear/Conv weights are units


def test_wanda_uses_the_models_own_activations(factory):
    """Wanda's scores weight |W| by the input norms the model's forward produced: a
    column whose input is always zero is pruned first, whatever its weights."""
    net = _net(factory)
    with torch.no_grad():
        net.head.weight[:, 0] = 10.0  # the largest weights...
        net.conv.weight.zero_(), net.conv.bias.zero_()
        net.norm.weight[0], net.norm.bias[0] = 0.0, -5.0  # ...see an input that is always zero
    secateurs.prune({"scorer": "wanda", "sparsity": 0.25, "targets": ["head.weight"]},
                    model=net, calibration=_images(), progress=False)
    assert net.head.weight[:, 0].eq(0).all()


def test_targets_and_exclude_choose_the_weights(factory):
    net = _net(factory)
    secateurs.prune({"scorer": "magnitude", "sparsity": 0.5, "targets": ["*.weight"], "exclude": ["head.*", "norm.*"]},
                    model=net, progress=False)
    assert _zeros(net) == pytest.approx({"stem.weight": 0.5, "conv.weight": 0.5, "head.weight": 0.0}, abs=0.02)


def test_statistics_scorers_refuse_targets_that_are_not_weights(factory):
    with pytest.raises(SecateursError, match="norm.weight is not a Linear/Conv weight"):
        secateurs.prune({"scorer": "wanda", "sparsity": 0.5, "targets": ["norm.weight"]},
                        model=_net(factory), calibration=_images(), progress=False)


@pytest.mark.parametrize("granularity", ["channels", "heads"])
def test_structured_granularity_is_refused(factory, granularity):
    with pytest.raises(SecateursError, match=f"defines no {granularity!r} groups"):
        secateurs.prune({"scorer": "magnitude", "sparsity": 0.5, "granularity": granularity, "applier": "remove"},
                        model=_net(factory), progress=False)


def test_a_recipe_names_a_factory_and_the_output_reloads(factory, tmp_path):
    recipe = tmp_path / "recipe.toml"
    out = tmp_path / "out"
    recipe.write_text(f'model = "{factory}:build"\noutput = "{out}"\nsparsity = 0.5\n[scorer]\nname = "magnitude"\n')
    with pytest.warns(UserWarning, match="generic 'module' adapter"):
        outcome = secateurs.prune(recipe, progress=False)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "secateurs-module.json", "report.json"}
    fresh = _net(factory)
    load_model(fresh, str(out / "model.safetensors"))
    x = _images(1)[0]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), outcome.loaded.model(x))
    assert _zeros(fresh) == pytest.approx(dict.fromkeys(WEIGHTS, 0.5), abs=0.02)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("missing.py:build", "does not exist"), ("{f}:nope", "defines no function 'nope'"),
     ("{f}:torch", "defines no function")],
)
def test_bad_factories_are_one_clear_error(factory, spec, message):
    with pytest.raises(SecateursError, match=message):
        secateurs.load(spec.format(f=factory))


def test_a_torchvision_model_no_adapter_knows_prunes_with_wanda():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.efficientnet_b0(num_classes=5).eval()
    assert find_adapter(net).name == "module"
    with pytest.warns(UserWarning, match="EfficientNet"):
        outcome = secateurs.prune({"scorer": "wanda", "sparsity": 0.5}, model=net,
                                  calibration=[torch.randn(1, 3, 32, 32)], progress=False)
    assert abs(outcome.result.sparsity - 0.5) < 0.01


def test_wanda_on_a_grouped_conv_weights_each_filter_by_its_own_input_channels():
    """A depthwise conv's filter ``o`` sees only input channel ``o``: a silent channel's
    filter is pruned entirely before any other."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.Flatten())
    x = torch.randn(2, 4, 6, 6)
    x[:, 2] = 0.0
    with pytest.warns(UserWarning, match="Sequential"):
        secateurs.prune({"scorer": {"name": "wanda", "comparison": "matrix"}, "sparsity": 0.25},
                        model=net, calibration=[x], progress=False)
    pruned = net[0].weight.eq(0).flatten(1).all(1)
    assert pruned.tolist() == [False, False, True, False]


def test_ken_restores_an_unknown_modules_weights_to_a_reference_from_a_factory(factory):
    """KEN keeps ``k`` fine-tuned entries per row and restores the rest to the reference."""
    pytest.importorskip("secateurs_ken")
    source = factory.read_text() + textwrap.dedent(
        """
        def finetuned():
            net = build()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.1 * torch.randn_like(p))
            return net
        """
    )
    factory.write_text(source)
    with pytest.warns(UserWarning, match="generic 'module' adapter"):
        outcome = secateurs.prune(
            {"model": f"{factory}:finetuned", "reference_model": f"{factory}:build", "scorer": "ken",
             "sparsity": 0.5, "allocator": "uniform", "applier": "restore"},
            progress=False,
        )
    pre = _net(factory)
    for name in WEIGHTS:
        changed = outcome.loaded.model.get_parameter(name) != pre.get_parameter(name)
        assert changed.float().mean() == pytest.approx(0.5, abs=0.02), name
