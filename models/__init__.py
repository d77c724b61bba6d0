"""Backbones (PVT v1 ours; ViT and ResNet from timm) behind one timm-style registry."""
from models.checkpoint import CheckpointError, read_state_dict
from models.registry import UnknownModelError, create_model, list_models, model_family

__all__ = ["CheckpointError", "UnknownModelError", "create_model", "list_models", "model_family", "read_state_dict"]
