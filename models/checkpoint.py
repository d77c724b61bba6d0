"""Safe, strict-by-default loading of local checkpoint files into a model.

Accepts the layouts the field ships: a plain state dict, ``{"model": state_dict}`` (official PVT,
DeiT), ``{"state_dict": ...}`` (mmcv / timm training checkpoints) and ``.safetensors`` files.
Never unpickles arbitrary objects (``weights_only=True``).
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Mapping

import torch
import torch.nn as nn


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or does not fit the model (one line)."""


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read ``path`` into a flat ``{name: tensor}`` dict, or raise CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path} (give the path of a local .pth/.safetensors file)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            # torch's weights-only unpickler warns (a UserWarning naming its own source line) about a
            # pickle protocol other than its default before it refuses or reads the file; the outcome
            # is all a user needs, as one line, so the warning is not let through to stderr.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code objects, truncated file...
        text = str(exc).strip()
        if "weights only load failed" in text.lower() or "weights_only" in text:
            # torch's own message suggests weights_only=False: the unsafe route. We never take it.
            raise CheckpointError(
                f"refused checkpoint {path}: it holds Python objects besides tensors, and unpickling them could "
                "run code; save a plain state dict (torch.save(model.state_dict(), ...)) or .safetensors") from None
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line[:200]}") from None
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict (expected a dict of tensors, or {{'model': ...}})"
        )
    complex_keys = [k for k, v in obj.items() if v.is_complex()]
    if complex_keys:
        raise CheckpointError(f"checkpoint {path} holds complex-valued tensors ({complex_keys[0]}, ...): "
                              "not a backbone's weights")
    # DDP / DeepSpeed save with a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into_model(model: nn.Module, path: str, strict: bool = True, skippable: str | None = None) -> None:
    """Load ``path`` into ``model``; shape mismatches, missing keys and (when strict) extra keys
    become a one-line CheckpointError. ``skippable`` is a regex of extra keys that a strict load
    still accepts (an ablation without some modules loads its parent's checkpoint). Keys left
    over are stored on ``model.checkpoint_unused_keys`` so callers can report them."""
    state = read_state_dict(path)
    # A wrapper (e.g. ViT's simple feature pyramid) names the sub-module its checkpoints fit.
    target = getattr(model, "checkpoint_target", model)
    own = target.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"checkpoint {path} does not fit: {k} is {tuple(state[k].shape)} in the file and "
            f"{tuple(own[k].shape)} in the model ({len(mismatched)} mismatched keys)"
        )
    missing = sorted(set(own) - set(state))
    unused = sorted(set(state) - set(own))
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {len(missing)} parameters of the model, e.g. {missing[0]} "
            "(is it a checkpoint of this model?)"
        )
    unexpected = [k for k in unused if not (skippable and re.match(skippable, k))]
    if strict and unexpected:
        raise CheckpointError(
            f"checkpoint {path} has {len(unexpected)} keys the model lacks, e.g. {unexpected[0]} "
            "(is it a checkpoint of this model?)"
        )
    target.load_state_dict(state, strict=False)
    model.checkpoint_unused_keys = unused
