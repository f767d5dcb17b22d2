"""Fixtures of the timm adapter tests."""

from __future__ import annotations

import pytest
import torch

from timm_models import SPECS


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(SPECS))
def family(request) -> str:
    return request.param
