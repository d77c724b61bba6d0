"""Dense-prediction heads over any backbone of ``models``: RetinaNet (detection) and Semantic FPN
(segmentation), the two set-ups of the PVT paper."""
from models.heads.retinanet import HEAD_NORMS, build_retinanet
from models.heads.semantic_fpn import SemanticFPN

__all__ = ["HEAD_NORMS", "SemanticFPN", "build_retinanet"]
