"""One registry and one ``create_model`` for every backbone, in timm's style.

Each family module registers a builder per variant with ``@register_model``. A builder takes
``num_classes`` and ``features_only`` and returns an ``nn.Module``; ``create_model`` adds the
checkpoint loading that is the same for every family.

This module imports no family when it loads (the families import it for ``register_model``):
it imports them on the first question asked of it (``FAMILIES``), so whichever way a caller
reaches the registry, every variant is registered before it answers.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch.nn as nn

from models.checkpoint import load_into_model

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}
#: The family modules (models/<name>.py); a new family is one line here (and its names in catalog.py).
FAMILIES = ("convnext", "pvt", "pvt_v2", "swin", "timm_backbones")


def _register_families() -> None:
    for family in FAMILIES:  # each registers its variants as it is imported; once imported, free
        importlib.import_module(f"models.{family}")


class UnknownModelError(ValueError):
    """A model name the registry does not know (the message lists the known ones)."""


def register_model(family: str):
    """Decorator: register ``fn`` under its own name as a variant of ``family``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[fn.__name__] = fn
        _FAMILY[fn.__name__] = family
        return fn

    return wrap


def list_models() -> list[str]:
    _register_families()
    return sorted(_BUILDERS)


def model_family(name: str) -> str:
    _check_known(name)
    return _FAMILY[name]


def create_model(
    name: str,
    num_classes: int = 1000,
    features_only: bool = False,
    checkpoint: str | None = None,
) -> nn.Module:
    """Build backbone ``name``; with ``features_only`` it returns four NCHW maps at strides
    4/8/16/32 and exposes ``feature_channels`` / ``feature_strides``.

    ``checkpoint`` is a local file (plain state dict or ``{"model": ...}``), loaded safely. A
    classification model loads it strictly, except for the extra keys it declares it can do
    without (``model.checkpoint_skippable``, a regex: ``pvt_small_nosr`` loads pvt_small's
    checkpoint and leaves its attention ``sr``/``norm`` keys); a features-only model loads every
    parameter it has. Either way the checkpoint keys the model had no use for are reported in
    ``model.checkpoint_unused_keys``.
    """
    _check_known(name)
    model = _BUILDERS[name](num_classes=num_classes, features_only=features_only)
    if checkpoint is not None:
        skippable = getattr(model, "checkpoint_skippable", None)
        load_into_model(model, checkpoint, strict=not features_only, skippable=skippable)
    return model


def _check_known(name: str) -> None:
    _register_families()
    if name not in _BUILDERS:
        raise UnknownModelError(
            f"unknown model '{name}'; known models: {', '.join(sorted(_BUILDERS))}"
        )
