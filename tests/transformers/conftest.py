"""Fixtures for the transformers adapter tests (helpers: ``tf_models``)."""

from __future__ import annotations

import pytest

from tf_models import FAMILIES


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param
