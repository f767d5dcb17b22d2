"""The invariant tests reuse the tiny models of the adapter test folders."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for folder in ("transformers", "timm"):  # families, tf_models, timm_models
    path = str(HERE.parent / folder)
    if path not in sys.path:
        sys.path.insert(0, path)
