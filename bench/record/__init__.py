"""The record schema (one dataclass: every field with its unit and kind) and the run directory,
cut by concern: ``declared`` (the schema, its check and read-time validation), ``upgrade`` (older
records) and ``rundir`` (the files on disk). Everything public is re-exported here, so callers
import ``bench.record`` alone.

A record is one finished cell, one JSON line. ``Record`` lists every field a record may hold; the
writers (step, finetune, sweep) are checked against it when they append (an unknown field is a
programming error, caught by the tests), and the report reads it to decide what to show: fields of
kind ``setting`` that vary between cells become columns, a ``measure`` declared with a ``Display``
is a column of its section's main or details table (label, unit, direction, format: declared once,
here), ``provenance`` goes into the details view. Readers go through ``schema()``, which holds each
field's python type. ``schema_version`` is in every record; ``upgrade`` reads older records (every
shim for them lives there).

The run directory, ``RUN_DIR/``:
- ``records.jsonl``: the records of single-process and rank-0 writers; a concurrent writer that is
  one of several (SLURM array tasks, jobs sharing ``--out``) writes its own shard
  ``records.<writer>.jsonl`` (O_APPEND is not atomic across NFS clients). Readers take all as one.
- ``invocations.jsonl``: one line per command that passed validation (command, git commit,
  environment); each record names its invocation. ``env.json`` keeps the first one (older readers).
- ``claims/``: one exclusive claim file per cell being measured (bench.sweep).

Writing is all-or-nothing: one ``os.write`` of the whole line, checked for a short write, then
fsync. A torn tail left by a kill mid-write is moved to ``records.torn-<time>.jsonl`` (its bytes
kept) before the next append, and said so. Reading skips unreadable lines (not JSON, not an
object, invalid UTF-8) with one warning that counts them.
"""
from bench.record.declared import (
    AUTO_CHANGE,
    CELL,
    FIELDS,
    FINETUNE,
    MAX_AUTO_RUNS,
    MAX_KEPT_SAMPLES,
    MAX_REPEATS,
    MAX_STEP_MS,
    MEASURE,
    PERFORMANCE,
    PROVENANCE,
    SCHEMA,
    SCHEMA_VERSION,
    SETTING,
    Display,
    FieldSpec,
    Record,
    Schema,
    SchemaError,
    _f,
    check_record,
    schema,
    slowest,
    span,
    thinned,
    valid,
    valid_samples,
    well_formed,
)
from bench.record.rundir import (
    ENV,
    INVOCATIONS,
    RECORDS,
    RecordsRead,
    RecordWriteError,
    RunDir,
    cell_identity,
    default_run_dir,
    is_run_dir,
    latest_by_cell,
    new_run_id,
    not_a_run_dir,
    read_records,
    read_records_counted,
    read_warnings,
    timestamp,
    writer_name,
)
from bench.record.upgrade import V1_CONFIGURATION, upgrade

__all__ = ["AUTO_CHANGE", "MAX_AUTO_RUNS",
           "CELL", "ENV", "FIELDS", "FINETUNE", "INVOCATIONS", "MAX_KEPT_SAMPLES", "MAX_REPEATS", "MAX_STEP_MS",
           "MEASURE", "PERFORMANCE", "PROVENANCE", "RECORDS", "RecordsRead", "read_records", "read_warnings",
           "thinned", "valid_samples",
           "SCHEMA", "SCHEMA_VERSION", "SETTING", "V1_CONFIGURATION", "Display", "FieldSpec", "Record",
           "RecordWriteError", "RunDir", "Schema", "SchemaError", "_f", "cell_identity", "check_record",
           "default_run_dir", "is_run_dir", "latest_by_cell",
           "not_a_run_dir", "new_run_id", "read_records_counted", "schema", "slowest", "span",
           "timestamp", "upgrade", "valid", "well_formed", "writer_name"]
