"""secateurs-timm and secateurs-lrp without timm (the optional ``timm`` extra): the plugins
load, LRP prunes torchvision models end to end (image folders, save, reload), a timm model
is refused with the one line saying how to install timm, and timm is never imported.

The run happens in a fresh interpreter in which timm is not importable (``no_timm.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secateurs_timm.adapters import ADAPTERS, MISSING, TIMM_ADAPTERS
from secateurs_timm.base import SPEC_KEY
from lrp_tiny import SPECS, tiny

INSTALL = "needs timm, which is not installed; install it with: pip install 'secateurs-timm[timm]'"


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("no-timm")
    timm_model = tiny("resnet")
    timm_model.extra[SPEC_KEY] = SPECS["resnet"][1]
    timm_model.adapter.save(timm_model, root / "timm-resnet")
    env = {**os.environ, "SECATEURS_CACHE": str(root / "cache")}
    script = Path(__file__).with_name("no_timm.py")
    proc = subprocess.run([sys.executable, str(script), str(root / "work"), str(root / "timm-resnet")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_with_timm_the_timm_adapters_are_registered_under_their_names():
    assert set(TIMM_ADAPTERS) <= set(ADAPTERS) and MISSING == ()


def test_the_plugins_load_and_timm_is_never_imported(summary):
    assert summary["warnings"] == []
    assert {"torchvision-resnet", "torchvision-vgg", "torchvision-vit", *TIMM_ADAPTERS} <= set(summary["adapters"])
    assert summary["timm_modules"] == []


def test_lrp_prunes_a_saved_torchvision_resnet_on_an_image_folder(summary):
    run = summary["runs"]["tv_resnet18"]
    assert run["adapter"] == run["reloaded_adapter"] == "torchvision-resnet"
    assert run["pruned"] == run["reloaded"] < run["dense"]
    assert 0.0 <= run["accuracy"] <= 1.0


@pytest.mark.parametrize("family", ["tv_vgg", "tv_vit"])
def test_lrp_prunes_torchvision_vgg_and_vit(summary, family):
    run = summary["runs"][family]
    assert run["adapter"] == family.replace("tv_", "torchvision-")
    assert run["pruned"] < run["dense"]


@pytest.mark.parametrize("how", ["packaged", "saved"])
def test_a_timm_model_is_refused_in_one_line(summary, how):
    message = summary["refusals"][how]
    assert message.endswith(INSTALL) and "\n" not in message


def test_naming_a_timm_adapter_says_it_needs_timm(summary):
    assert f"resnet: the 'resnet' adapter {INSTALL}" in summary["refusals"]["adapter"]
