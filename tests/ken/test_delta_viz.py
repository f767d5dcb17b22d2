"""Delta storage round trip, wrong base refused, KEN_viz images and the CLI."""

import json

import matplotlib.image as mpimg
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from secateurs.errors import SecateursError
from secateurs_ken.api import ken, ken_state
from secateurs_ken.delta import load_ken_delta, pack_bits, save_ken_delta, unpack_bits
from secateurs_ken.viz import ken_viz, neighbour_counts


@pytest.mark.parametrize("k", [1, 6, 30])
def test_delta_round_trip_bit_identical(pair, tmp_path, k):
    pre, ft = pair
    pre_before = {n: t.clone() for n, t in pre.state_dict().items()}
    model = ken(pre, ft, k=k)
    files = save_ken_delta(pre, model, tmp_path / "d.safetensors", base_name="tiny-pre")
    manifest = json.loads(files[1].read_text())
    assert manifest["base_model"] == "tiny-pre" and manifest["kept_values"] <= sum(p.numel() for p in ft.parameters())
    rebuilt = load_ken_delta(pre, files[0])
    for name, t in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name].view(torch.uint8) if t.is_floating_point() else rebuilt.state_dict()[name],
                           t.view(torch.uint8) if t.is_floating_point() else t), name
        assert torch.equal(pre.state_dict()[name], pre_before[name])
    state = load_ken_delta(pre.state_dict(), files[0])
    assert all(torch.equal(state[n], t) for n, t in model.state_dict().items())


def test_wrong_base_refused(pair, tmp_path):
    pre, ft = pair
    path = save_ken_delta(pre, ken(pre, ft, k=4), tmp_path / "d.safetensors")[0]
    with pytest.raises(SecateursError, match="base model differs"):
        load_ken_delta(ft, path)


def test_bit_packing():
    mask = torch.rand(5, 13, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.shape == (5, 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_bits(packed, 13), mask)


def test_neighbour_counts_non_square():
    m = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert neighbour_counts(m).tolist() == [[2, 1, 1], [1, 2, 0]]


def _check_png(path, min_w, min_h):
    img = mpimg.imread(path)
    assert img.shape[0] >= min_h and img.shape[1] >= min_w
    rgb = img[..., :3]
    assert (rgb < 0.9).mean() > 0.02  # drawn content, not a blank canvas
    assert len({tuple(c) for c in rgb.reshape(-1, 3)[::97].round(2).tolist()}) > 5  # several colours


def test_viz_views(pair, tmp_path):
    pre, ft = pair
    _, masks = ken_state(pre.state_dict(), ft.state_dict(), k=8)
    paths = ken_viz(masks, "intermediate.dense.weight", tmp_path, values=ft.state_dict(), max_pixels=16)
    for view in ("matrix", "neighbours", "layers", "kept"):
        _check_png(paths[view], 300, 250)
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4 and "src='ken_viz" not in html
    # 40x24 matrices with max_pixels=16 are drawn in 3x3 blocks, and the title says so
    from secateurs_ken.viz import matrix_image
    img, f = matrix_image(masks["bert.encoder.layer.0.intermediate.dense.weight"], None, 16)
    assert f == 3 and img.shape == (14, 8)
    with pytest.raises(SecateursError, match="no tensor"):
        ken_viz(masks, "nope.weight", tmp_path)


def test_cli_ken_viz(pair, tmp_path):
    from secateurs.cli import cli
    from secateurs.plugins import get_manager

    get_manager().add_commands(cli)

    pre, ft = pair
    for name, model in (("pre", pre), ("ft", ft)):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    result = CliRunner().invoke(cli, ["ken-viz", str(tmp_path / "pre.safetensors"), str(tmp_path / "ft.safetensors"),
                                       "--matrix", "attention.self.query.weight", "--k", "5", "--out", str(tmp_path / "viz")])
    assert result.exit_code == 0, result.output
    _check_png(tmp_path / "viz" / "ken_viz_layers.png", 300, 250)
