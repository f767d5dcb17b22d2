"""Model factories for the torchvision recipes (``model = "recipes/torchvision_models.py:resnet18"``).

torchvision builds these offline with random weights; with internet access pass
``weights=torchvision.models.ResNet18_Weights.DEFAULT`` (or load your own state dict) to
prune a trained model instead.
"""

from __future__ import annotations

import torchvision
from torch import nn


def resnet18() -> nn.Module:
    """An ImageNet-shaped (1000-class) torchvision ResNet-18."""
    return torchvision.models.resnet18()
