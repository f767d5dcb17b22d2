"""What every benchmark shares: a description of the machine, and writing
``benchmarks/results/<name>.json`` atomically (temp file + rename).

Benchmark scripts run as ``python benchmarks/<area>/<script>.py``; their area's helpers
import this module after putting ``benchmarks/`` on ``sys.path``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
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
