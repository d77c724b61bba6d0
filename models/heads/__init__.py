"""Dense-prediction heads over any backbone of ``models``: RetinaNet (detection) and Semantic FPN
(segmentation), the two set-ups of the PVT paper."""
from models.heads.dense import (BACKBONE_ROOT, DENSE_PARTS, DENSE_TASKS, DetectorCostView, build_dense, cost_view,
                                pad_to_32)
from models.heads.retinanet import HEAD_NORMS, build_retinanet
from models.heads.semantic_fpn import SemanticFPN

__all__ = ["BACKBONE_ROOT", "DENSE_PARTS", "DENSE_TASKS", "DetectorCostView", "HEAD_NORMS", "SemanticFPN",
           "build_dense", "build_retinanet", "cost_view", "pad_to_32"]
