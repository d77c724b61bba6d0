"""bench: measure vision backbones (params, FLOPs, memory, speed, fine-tune quality) and report on them.

A figure's way down the layers (pyproject's [tool.importlinter]; bench/README.md has the map):
cli -> commands -> sweep + scenarios (one cell: task adapter, engine, trackers) -> typed results
(measure/) -> one CellResult -> one Record (record/) -> run directory -> report (read from the Record schema).
"""
__version__ = "0.1.0"
