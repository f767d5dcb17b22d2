"""``streamed_safetensors``: a safetensors file written tensor by tensor (or piece by piece)
reads back like one written by ``save_file``; a failed write leaves nothing."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from secateurs.tensor_files import streamed_safetensors

TENSORS = {
    "f32": torch.randn(3, 5), "u8": torch.arange(7, dtype=torch.uint8), "bf16": torch.randn(4).to(torch.bfloat16),
    "scalar": torch.tensor(3, dtype=torch.int64), "empty": torch.zeros(0, 3, dtype=torch.int16),
    "bool": torch.rand(5) > 0.5, "strided": torch.randn(2, 3).half().t(),
}


def test_tensors_and_pieces_read_back_as_written_with_the_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    with streamed_safetensors(path, {"format": "x"}) as add:
        for name, tensor in TENSORS.items():
            add(name, tensor)
        add("pieces", (TENSORS["f32"][i : i + 2] for i in range(0, 3, 2)))
    got = load_file(path)
    assert got.keys() == {*TENSORS, "pieces"} and torch.equal(got["pieces"], TENSORS["f32"])
    assert all(got[k].dtype == t.dtype and torch.equal(got[k], t) for k, t in TENSORS.items())
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no scratch left


@pytest.mark.parametrize(
    "name,tensor,message",
    [("f32", torch.ones(1), "added twice"), ("c", torch.ones(1, dtype=torch.complex64), "cannot store"),
     ("d", iter([]), "no pieces"), ("e", iter([torch.ones(2, 2), torch.ones(2, 3)]), "does not continue")],
)
def test_a_bad_tensor_is_refused_and_the_file_is_not_written(tmp_path, name, tensor, message):
    with pytest.raises(ValueError, match=message), streamed_safetensors(tmp_path / "x.safetensors") as add:
        add("f32", TENSORS["f32"])
        add(name, tensor)
    assert not any(tmp_path.iterdir())
