"""Fixtures of the timm adapter tests."""

from __future__ import annotations

import pytest

from timm_models import SPECS


@pytest.fixture(params=sorted(SPECS))
def family(request) -> str:
    return request.param
