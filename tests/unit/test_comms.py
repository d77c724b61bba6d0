"""bench.measure.comms on hand-made events: interval arithmetic, bus bandwidth, the byte
predictions and reading a Kineto trace shaped like torch 2.14's CPU gloo traces."""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest

from bench.engines import get_engine
from bench.measure import comms
from bench.record import Record
from bench.traffic import Payload

# --------------------------------------------------------------------------------------------
# Intervals


def test_union_merges_overlapping_and_touching_and_drops_empty():
    assert comms.union([(5, 7), (0, 2), (1, 3), (3, 4), (9, 9)]) == [(0, 4), (5, 7)]
    assert comms.length([(0, 2), (1, 3), (10, 11)]) == 4


def test_fully_overlapped_comm_is_not_exposed():
    assert comms.exposed([(2, 4), (5, 6)], [(0, 10)]) == 0


def test_fully_exposed_comm():
    assert comms.exposed([(2, 4), (3, 5)], [(0, 1), (6, 8)]) == 3  # union (2, 5), no compute beside it


def test_partly_overlapped_comm_counts_each_instant_once():
    # comm (0, 10); compute (2, 4) and (3, 6) nested/overlapping -> covered 2..6 -> exposed 6
    assert comms.exposed([(0, 10)], [(2, 4), (3, 6), (8, 9)]) == 10 - 4 - 1
    assert comms.intersection([(0, 10)], [(2, 4), (3, 6)]) == 4


def test_clip_keeps_the_parts_inside_windows():
    assert comms.clip([(0, 10), (12, 13)], [(2, 4), (8, 12.5)]) == [(2, 4), (8, 10), (12, 12.5)]


# --------------------------------------------------------------------------------------------
# Bus bandwidth (nccl-tests' PERFORMANCE.md)


@pytest.mark.parametrize("kind, n, factor", [("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_gather", 4, 0.75),
                                             ("reduce_scatter", 2, 0.5), ("broadcast", 8, 1.0)])
def test_bus_factor(kind, n, factor):
    assert comms.bus_factor(kind, n) == pytest.approx(factor)


def test_busbw_of_a_kind_and_combined_by_bytes():
    ar = comms.kind_stats("all_reduce", 1, 1e9, 1000.0, 4)  # 1 GB in 1 s: algbw 1 GB/s, busbw 1.5
    ag = comms.kind_stats("all_gather", 1, 3e9, 1000.0, 4)  # algbw 3, busbw 2.25
    assert ar.busbw_gbps == pytest.approx(1.5) and ag.busbw_gbps == pytest.approx(2.25)
    assert comms.combined_busbw([ar, ag]) == pytest.approx((1.5 * 1 + 2.25 * 3) / 4)
    assert comms.kind_stats("barrier", 1, 0, 1.0, 4).busbw_gbps is None
    assert comms.combined_busbw([]) is None


# --------------------------------------------------------------------------------------------
# Predictions


def predict(engine: str, zero: int, p: int, e: int, n: int, buffer_bytes: int = 0):
    """The engine's own prediction (each engine owns it: Engine.comm_prediction)."""
    trainer = SimpleNamespace(engine_config={"zero_optimization": {"stage": zero}})
    return get_engine(engine).comm_prediction(Payload(p, e, n, buffer_bytes), trainer)


def test_predictions_per_engine():
    p, e, n = 1001, 4, 2
    assert predict("ddp", 0, p, e, n, buffer_bytes=40).bytes == p * e + 40
    assert predict("deepspeed", 2, p, e, n).bytes == (p + 1002) * e  # all-gather padded to n
    assert predict("deepspeed", 1, p, e, 4).bytes == (p + 1004) * e
    assert predict("deepspeed", 0, p, e, n).bytes == p * e
    assert predict("deepspeed", 3, p, e, n).bytes == 3 * p * e
    assert predict("fsdp2", 0, p, 2, n, buffer_bytes=40).bytes == 3 * p * 2  # only DDP broadcasts buffers
    assert predict("none", 0, p, e, n) is None


def test_the_payload_of_a_model_counts_trainable_parameters_and_buffers():
    import torch.nn as nn

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    got = Payload.of(model, 2)
    assert (got.trainable_numel, got.grad_bytes, got.world_size) == (6 + 2 + 2, 4, 2)
    assert got.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers()) > 0


def test_mismatch_tolerance_of_a_payload_and_of_a_range():
    one = comms.Prediction(100, "")
    assert not comms.mismatch(100.5, one) and not comms.mismatch(99.5, one)  # 0.5% < 1%
    assert comms.mismatch(150, one) and comms.mismatch(98, one)
    assert not comms.mismatch(150, None)
    zero3 = predict("deepspeed", 3, 100, 4, 2)  # 800..1200 bytes
    assert (zero3.low, zero3.bytes) == (800, 1200)
    assert not comms.mismatch(800, zero3) and not comms.mismatch(1020, zero3) and not comms.mismatch(1200, zero3)
    assert comms.mismatch(400, zero3) and comms.mismatch(1300, zero3)


# --------------------------------------------------------------------------------------------
# A trace as torch 2.14 writes it on CPU gloo (record_shapes=True)


def _trace(tmp_path, events, gz=True):
    meta = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 9, "args": {"name": "thread 9 (pt_gloo_runloop)"}},
            {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "thread 1 (python)"}}]
    path = tmp_path / ("rank0.json.gz" if gz else "rank0.json")
    data = json.dumps({"traceEvents": meta + events})
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(data)
    else:
        path.write_text(data)
    return path


def _x(name, ts, dur, tid=1, cat="cpu_op", args=None):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur, "args": args or {}}


def _gloo(kind, ts, dur, dims, ctype="float"):
    return _x(f"gloo:{kind}", ts, dur, tid=9, cat="user_annotation",
              args={"Input Dims": [dims], "Input type": [ctype]})


def test_read_and_analyse_a_gloo_trace(tmp_path):
    events = [
        _x("ProfilerStep#1", 0, 100, cat="user_annotation"), _x("ProfilerStep#2", 100, 100, cat="user_annotation"),
        # step 1: an all-reduce 40..80, compute until 60 -> exposed 20; a broadcast of 10 longs during compute
        _x("aten::convolution", 0, 60), _x("aten::add", 10, 5), _x("c10d::allreduce_", 40, 1),
        _gloo("all_reduce", 40, 40, [1000]), _gloo("broadcast", 5, 5, [10], "long int"),
        # step 2: an all-gather of 500 per rank (payload 1000 floats) 150..190, no compute after 120
        _x("aten::mm", 100, 20), _gloo("all_gather", 150, 40, [500]),
        _gloo("all_reduce", 300, 10, [7]),  # after the last step: not counted
    ]
    facts = comms.read_trace(_trace(tmp_path, events), world_size=2)
    assert facts.steps == [(0, 100), (100, 200)]
    assert {c.kind for c in facts.collectives} == {"all_reduce", "broadcast", "all_gather"}
    assert (0, 60) in facts.compute and (40, 41) not in facts.compute  # c10d ops are not compute
    # per step: 1000 floats all-reduced + 10 longs broadcast (on half the steps) = DDP's P x 4 + buffers 40
    res = comms.analyse(facts, 2, predict("ddp", 0, 1000, 4, 2, buffer_bytes=40), "test")
    assert res.steps == 2 and res.step_ms == pytest.approx(0.1)
    assert res.comm_ms == pytest.approx((40 + 5 + 40) / 2 / 1e3)
    assert res.exposed_ms == pytest.approx((20 + 0 + 40) / 2 / 1e3)
    assert res.exposed_share == pytest.approx(0.3)
    assert res.bytes == pytest.approx((1000 * 4 + 10 * 8 + 1000 * 4) / 2)
    kinds = {k.kind: k for k in res.kinds}
    assert kinds["all_gather"].bytes == 2000 and kinds["broadcast"].count == 0.5
    assert kinds["all_reduce"].busbw_gbps == pytest.approx(2000 / 20e-6 / 1e9 * 1.0)
    assert res.flags == []  # traced 4040 == predicted 4040
    rec = res.to_record()
    assert set(rec) <= set(Record.__dataclass_fields__)
    assert 0 <= rec["comm_exposed_share"] <= 1 and rec["comm_bytes_predicted"] == 4040
    # a prediction missing a third of the traffic (say the all-gather) is flagged
    assert comms.analyse(facts, 2, predict("ddp", 0, 700, 4, 2), "test").flags == [comms.MISMATCH_FLAG]


def test_a_trace_without_steps_is_refused(tmp_path):
    facts = comms.read_trace(_trace(tmp_path, [_gloo("all_reduce", 0, 1, [4])], gz=False), 2)
    with pytest.raises(ValueError, match="ProfilerStep"):
        comms.analyse(facts, 2, None, "test")


# --------------------------------------------------------------------------------------------
# A trace shaped as Kineto writes it on CUDA: each ProfilerStep# twice (the CPU user_annotation and a
# gpu_user_annotation per stream), kernels tied to their launch by "correlation" and to the CPU op
# by "External id", record_param_comms around the launch of its NCCL kernel.


def _launch(ts, correlation, tid=1):
    return _x("cudaLaunchKernel", ts, 2, tid=tid, cat="cuda_runtime", args={"correlation": correlation})


def _kernel(name, ts, dur, correlation, stream=7, external=None):
    args = {"correlation": correlation, "stream": stream, "device": 0}
    if external is not None:
        args["External id"] = external
    return _x(name, ts, dur, tid=stream, cat="kernel", args=args)


def _param_comms(ts, dur, collective, nelems, dtype="Float", external=None, tid=1):
    args = {"Collective name": collective, "In msg nelems": nelems, "Out msg nelems": nelems, "dtype": dtype}
    if external is not None:
        args["External id"] = external
    return _x("record_param_comms", ts, dur, tid=tid, args=args)


def _gpu_step(k, ts, dur, stream):
    return _x(f"ProfilerStep#{k}", ts, dur, tid=stream, cat="gpu_user_annotation")


CUDA_EVENTS = [
    _x("ProfilerStep#1", 0, 100, cat="user_annotation"), _x("ProfilerStep#2", 100, 100, cat="user_annotation"),
    # the device runs behind the CPU: step 1 on the device is 20..160, step 2 160..300 (two streams each)
    _gpu_step(1, 20, 100, 7), _gpu_step(1, 30, 130, 13), _gpu_step(2, 160, 70, 7), _gpu_step(2, 200, 100, 13),
    # step 1: a warm-up NCCL kernel no collective was recorded for, then an all-reduce of 256 bf16
    _launch(30, 5000), _kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 35, 2, 5000, stream=13),
    _param_comms(40, 10, "allreduce", 256, "BFloat16", external=101), _launch(45, 5001),
    _kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", 110, 30, 5001, stream=13),
    _launch(10, 4000), _kernel("sm90_xmma_gemm_bf16", 20, 100, 4000),
    # step 2: a coalesced all-gather (two collectives, one kernel), 200 floats out each
    _param_comms(105, 2, "all_gather", 200), _param_comms(108, 2, "all_gather", 200), _launch(115, 5002),
    _kernel("ncclDevKernel_AllGather_RING_LL", 200, 60, 5002, stream=13),
    _launch(120, 4001), _kernel("sm90_xmma_gemm_bf16", 160, 70, 4001),
    # after the profiled steps: not counted
    _param_comms(390, 5, "allreduce", 10**6), _launch(392, 5003), _kernel("ncclDevKernel_AllReduce", 400, 50, 5003),
]


def test_cuda_trace_counts_cpu_steps_and_clips_kernels_to_the_gpu_windows(tmp_path):
    facts = comms.read_trace(_trace(tmp_path, CUDA_EVENTS), 2)
    assert facts.steps == [(0, 100), (100, 200)]  # the gpu_user_annotation copies are not steps
    assert facts.windows == [(20, 300)]  # per step the union of its streams' annotations, then merged
    res = comms.analyse(facts, 2, None, "test")
    assert res.steps == 2
    assert res.step_ms == pytest.approx(280 / 2 / 1e3)
    # the all-gather ran on the device at 200..260, after the CPU's last window (0..200) ended
    assert res.comm_ms == pytest.approx((2 + 30 + 60) / 2 / 1e3)
    assert res.exposed_ms == pytest.approx((0 + 20 + 30) / 2 / 1e3)  # gemms cover 20..120 and 160..230
    assert res.bytes == pytest.approx((512 + 1600) / 2)


def test_nccl_kernels_join_their_collectives_by_correlation_not_position(tmp_path):
    facts = comms.read_trace(_trace(tmp_path, CUDA_EVENTS), 2)
    by_start = {c.start_us: c for c in facts.collectives}
    assert by_start[35].nbytes == 0 and by_start[35].kind == "all_reduce"  # the warm-up: no collective recorded
    assert by_start[110].nbytes == 512 and by_start[110].kind == "all_reduce"  # 256 bf16
    assert by_start[200].nbytes == 1600 and by_start[200].kind == "all_gather"  # both members of the group
    assert by_start[400].nbytes == 4 * 10**6


def test_a_kernel_without_its_launch_joins_by_external_id(tmp_path):
    events = [
        _x("ProfilerStep#1", 0, 100, cat="user_annotation"), _gpu_step(1, 0, 100, 7),
        _x("ProfilerStep#1", 10, 80, cat="gpu_user_annotation", tid=13),
        _param_comms(20, 10, "allreduce", 64, external=7),
        _kernel("ncclDevKernel_AllReduce_Sum_f32", 50, 10, 99, stream=13, external=7),
    ]
    res = comms.analyse(comms.read_trace(_trace(tmp_path, events), 2), 2, None, "test")
    assert res.steps == 1 and res.bytes == 256 and res.exposed_ms == pytest.approx(0.01)
