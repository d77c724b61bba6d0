"""Build: the model a cell measures, on its device, in its memory format."""
from __future__ import annotations

import torch
import torch.nn as nn

from bench.errors import BadInput


def build_model(name: str, features_only: bool = False, checkpoint: str | None = None) -> nn.Module:
    """``models.create_model`` with its errors turned into one-line bad-input errors."""
    from models import CheckpointError, UnknownModelError, create_model

    try:
        return create_model(name, features_only=features_only, checkpoint=checkpoint)
    except (UnknownModelError, CheckpointError) as exc:
        raise BadInput(str(exc)) from None


def place_model(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
