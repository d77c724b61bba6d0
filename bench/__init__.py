"""bench: measure vision backbones (params, FLOPs, memory, speed) and report on them.

The data's way, one module per stage: cli (parse, validate) -> plan (cells) -> build (models)
-> flops / speed / memory (measure) -> record (run directory) -> report.
"""
__version__ = "0.1.0"
