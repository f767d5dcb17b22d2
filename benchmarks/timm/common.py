"""Shared helpers of the timm benchmarks: machine description and atomic JSON results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


def write_results(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=RESULTS)
    with os.fdopen(fd, "w") as fh:
        json.dump({"machine": machine(), **payload}, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, target)
    return target
