"""Training engines behind one interface (bench.engines.base); importing this package registers
every engine module listed here."""
from bench.engines import ddp, deepspeed, plain  # noqa: F401  (registration)
from bench.engines.base import DTYPES, PRECISIONS, Trainer, TrainSpec, build_trainer, engine_names

__all__ = ["DTYPES", "PRECISIONS", "TrainSpec", "Trainer", "build_trainer", "engine_names"]
