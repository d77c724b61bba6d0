"""``cls``: the backbone as an ImageNet classifier (1000 classes)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.build import build_model
from bench.measure.flops import Flops, count_flops
from bench.plan import Cell
from bench.tasks.base import Task

NUM_CLASSES = 1000


class Classify(Task):
    name = "cls"

    def build(self, cell: Cell) -> nn.Module:
        return build_model(cell.model)

    def count(self, cell: Cell) -> Flops:
        """With the independent cross-check: the scenario counts once per model and size, outside timing."""
        return count_flops(self.build(cell), cell.model, cell.height, cell.width, cross_check=True)

    def train_targets(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, NUM_CLASSES, (x.shape[0],), device=x.device)

    def loss(self, forward: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(x).float(), targets)


CLS = Classify()
