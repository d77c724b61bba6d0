"""Dense-prediction heads over any backbone of ``models``: RetinaNet (detection) and Semantic FPN
(segmentation), the two set-ups of the PVT paper."""
from models.heads.dense import (
                                BACKBONE_ROOT,
                                BN_MODES,
                                DENSE_PARTS,
                                DENSE_TASKS,
                                DetectorCostView,
                                apply_bn_mode,
                                build_dense,
                                cost_view,
                                freeze_batchnorm,
                                pad_to_32,
)
from models.heads.retinanet import HEAD_NORMS, build_retinanet
from models.heads.semantic_fpn import SemanticFPN

__all__ = ["BACKBONE_ROOT", "BN_MODES", "DENSE_PARTS", "apply_bn_mode", "freeze_batchnorm", "DENSE_TASKS",
           "DetectorCostView", "HEAD_NORMS", "SemanticFPN",
           "build_dense", "build_retinanet", "cost_view", "pad_to_32"]
