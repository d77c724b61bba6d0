"""One registry and one ``create_model`` for every backbone, in timm's style.

Each family module registers a builder per variant with ``@register_model``. A builder takes
``num_classes`` and ``features_only`` and returns an ``nn.Module``; ``create_model`` adds the
checkpoint loading that is the same for every family.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from models.checkpoint import load_into_model

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


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
    _import_families()
    return sorted(_BUILDERS)


def model_family(name: str) -> str:
    _import_families()
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
    classification model loads it strictly; a features-only model loads every parameter it has
    and reports the checkpoint keys it had no use for in ``model.checkpoint_unused_keys``.
    """
    _import_families()
    _check_known(name)
    model = _BUILDERS[name](num_classes=num_classes, features_only=features_only)
    if checkpoint is not None:
        load_into_model(model, checkpoint, strict=not features_only)
    return model


def _check_known(name: str) -> None:
    if name not in _BUILDERS:
        raise UnknownModelError(
            f"unknown model '{name}'; known models: {', '.join(sorted(_BUILDERS))}"
        )


def _import_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from models import pvt, timm_backbones  # noqa: F401
