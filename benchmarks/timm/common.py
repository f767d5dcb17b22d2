"""What the timm benchmarks share: ``write_results`` from ``benchmarks/results_io.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results  # noqa: E402,F401
