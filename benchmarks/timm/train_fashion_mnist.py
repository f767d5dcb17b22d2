"""Train (or reuse the cached) small VGG, ResNet and ViT on Fashion-MNIST.

    .venv/bin/python benchmarks/timm/train_fashion_mnist.py [vgg resnet vit]

Runs on one torch thread (SECATEURS_THREADS to change): on a shared 2-core machine two
threads were 5x slower per step than one.

Checkpoints are cached by ``secateurs_timm.zoo.fashion_mnist_model``; this writes
benchmarks/results/timm_train_fashion_mnist.json with each model's settings, training
time and top-1 accuracy on the 10,000 test images.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from common import write_results

from secateurs_timm.zoo import METRICS, fashion_mnist_model, zoo_names


def main(names: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get("SECATEURS_THREADS", "1")))
    results = {}
    for name in names or zoo_names():
        path = fashion_mnist_model(name)
        results[name] = {"path": str(path), **json.loads((path / METRICS).read_text())}
        r = results[name]
        print(f"{name}: {r['test_accuracy']:.2%} top-1, {r['params']:,} params, "
              f"{r['train_seconds']:.0f} s on {r['train_samples']} samples x {r['config']['epochs']} epochs")
    write_results("timm_train_fashion_mnist", {"models": results})


if __name__ == "__main__":
    main(sys.argv[1:])
