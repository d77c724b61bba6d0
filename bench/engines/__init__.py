"""Training engines behind one interface (bench.engines.base); importing this package registers
every engine module listed here."""
from bench.engines import ddp, deepspeed, fsdp2, plain  # noqa: F401  (registration)
from bench.engines.base import (
    DEFAULT_DISTRIBUTED,
    DTYPES,
    PRECISIONS,
    Engine,
    Trainer,
    TrainSpec,
    base_record_fields,
    build_trainer,
    comm_prediction,
    engine_label,
    engine_names,
    get_engine,
    trainer_record_fields,
    validate_engine_settings,
)

__all__ = ["DEFAULT_DISTRIBUTED", "DTYPES", "PRECISIONS", "Engine", "TrainSpec", "Trainer", "base_record_fields",
           "build_trainer", "comm_prediction", "engine_label", "engine_names", "get_engine", "trainer_record_fields",
           "validate_engine_settings"]
