"""Detection timed under a realistic load (issue 17): a random RetinaNet head under torchvision's
0.05 threshold sends no box to NMS, so ``bench run`` builds its detectors with score_thresh=0 and
records the NMS load; and the parts of a dense model are timed under the cell's own set-up, by
the timing protocol, with a CI per part."""
from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig
from bench.launch.context import DistContext
from bench.plan import Cell
from bench.scenarios import step as step_scenario
from bench.tasks import task_for
from bench.tasks.dense import PARTS_MIN_ITERS, PartsSetup
from bench.tasks.det import TRAINED_SCORE_THRESH, count_nms_candidates, det_load

CPU = torch.device("cpu")
ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend=None)
CELL = Cell("resnet18", 64, 64, "infer", 1, "det")
# P3-P7 at 64 px: 8x8, 4x4, 2x2, 1x1, 1x1 locations x 9 anchors x 80 classes, each level capped at
# topk_candidates (1000): 1000 + 1000 + 1000 + 720 + 720
WORST_CASE_AT_64 = 4440


def _detector(score_thresh: float | None = None):
    torch.manual_seed(0)
    model = task_for("det").build(CELL)
    if score_thresh is not None:
        model.score_thresh = score_thresh
    return model


def test_random_head_sends_nothing_to_nms_at_the_trained_threshold_and_everything_at_zero():
    x = task_for("det").input(CELL, 2, CPU, torch.float32, False)
    old = count_nms_candidates(_detector(TRAINED_SCORE_THRESH), list(x))
    new = count_nms_candidates(_detector(), list(x))
    assert old == [0, 0]  # the old behaviour: postprocess timed a sigmoid, a threshold and a top-k
    assert new == [WORST_CASE_AT_64, WORST_CASE_AT_64]


def test_bench_run_detector_is_the_worst_case_and_the_finetune_keeps_its_thresholds():
    model = _detector()
    assert model.score_thresh == 0.0 and model.det_load == det_load(head_trained=False)
    assert det_load(head_trained=True).score_thresh == TRAINED_SCORE_THRESH == 0.05
    from models import create_model

    tuned = task_for("det").finetune_model(create_model("resnet18", features_only=True), 4, (64, 64), 32, "none")
    assert tuned.score_thresh == 0.05 and tuned.topk_candidates == 1000  # torchvision's, for its mAP


def test_det_cell_records_its_nms_load_and_per_part_cis():
    cfg = RunConfig(models=["resnet18"], task="det", res=[(64, 64)], budget=0.1, max_time=400)
    out = step_scenario.measure_cell(CELL, ONE, cfg).to_record()
    assert out["status"] == "ok", out["error"]
    assert out["det_load"] == "score_thresh=0 (random head, worst case)"
    assert out["nms_candidates"] == WORST_CASE_AT_64
    parts = ["backbone", "neck", "head", "postprocess"]
    assert list(out["part_latency_ms"]) == parts
    for part in parts:
        lo, hi = out["part_latency_ci95_ms"][part]
        assert lo <= out["part_latency_ms"][part] <= hi
        assert out["part_latency_iters"][part] >= PARTS_MIN_ITERS
    assert out["part_latency_setup"] == "no autocast, weights float32, contiguous, eager"


def test_parts_run_under_the_cells_autocast(monkeypatch):
    """Under --dtype bf16 the backbone's convolutions inside the parts pass give bf16 (the old pass
    ran them in fp32). Its output maps need not be bf16: frozen BatchNorm multiplies by fp32
    statistics, which promotes, in the whole model as in its parts."""
    seen: list[torch.dtype] = []
    task = task_for("seg")
    cell = Cell("resnet18", 64, 64, "infer", 1, "seg")
    model = task.build(cell)
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    cfg = RunConfig(models=["resnet18"], task="seg", res=[(64, 64)], dtype="bf16", channels_last=True,
                    budget=0.1, max_time=400)
    x = task.input(cell, 1, CPU, torch.float32, True)
    got = task.part_latency_ms(model.to(memory_format=torch.channels_last), x,
                               PartsSetup(torch.bfloat16, cfg.budget, cfg.max_time, cfg.channels_last, cfg.compile))
    rec = got.to_record()
    assert seen and set(seen) == {torch.bfloat16}
    assert rec["part_latency_setup"] == "autocast bfloat16, weights float32, channels_last, eager"
    assert set(rec["part_latency_ci95_ms"]) == {"backbone", "neck", "head"}
    assert all(ci is not None for ci in rec["part_latency_ci95_ms"].values())


def test_compiled_cells_say_their_parts_are_eager():
    model = _detector()
    assert "the parts were not" in PartsSetup(compiled=True).label(model)
    assert "compiled" not in PartsSetup(compiled=False).label(model)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_step_scenario_passes_the_cells_autocast_to_the_parts(monkeypatch, amp):
    """The scenario hands the parts pass the cell's own autocast dtype, budget and cap."""
    got: list[PartsSetup] = []
    det = task_for("det")
    monkeypatch.setattr(type(det), "part_latency_ms", lambda self, model, x, setup: got.append(setup))
    monkeypatch.setattr(step_scenario, "measure_lockstep", lambda step, device, budget, agree, cap: _scripted())
    cfg = RunConfig(models=["resnet18"], task="det", res=[(64, 64)], dtype="bf16" if amp else "fp32",
                    budget=0.3, max_time=50, compile=False)
    out = step_scenario.measure_cell(CELL, ONE, cfg).to_record()
    assert out["status"] == "ok", out["error"]
    assert got == [PartsSetup(amp, 0.3, 50.0, False, False)]


def _scripted():
    from bench.measure.timing import Latency

    return Latency(times_ms=[20.0 + i / 10 for i in range(10)], warmup_iters=6, warmup_ms=120.0,
                   stop_reason="converged")


# --------------------------------------------------------------------------- the real-image FPS protocol
def test_keep_ratio_size_is_mmdets_test_resize_by_hand():
    from bench.tasks.det import keep_ratio_size

    assert keep_ratio_size(480, 640, 800, 1333) == (800, 1067)  # short side to 800
    assert keep_ratio_size(400, 1200, 800, 1333) == (444, 1333)  # the long side caps it
    assert keep_ratio_size(64, 64, 64, 107) == (64, 64)


def test_run_data_option_takes_coco_for_det_only(tmp_path):
    from bench.config import build_config
    from bench.errors import BadInput

    assert build_config(RunConfig, {"models": "resnet18", "task": "det", "data": f"coco:{tmp_path}"}).data \
        == f"coco:{tmp_path}"
    assert build_config(RunConfig, {"models": "resnet18"}).data == "synthetic"
    with pytest.raises(BadInput, match="only for --task det"):
        build_config(RunConfig, {"models": "resnet18", "task": "cls", "data": f"coco:{tmp_path}"})
    with pytest.raises(BadInput, match="not a directory"):
        build_config(RunConfig, {"models": "resnet18", "task": "det", "data": f"coco:{tmp_path / 'none'}"})
    with pytest.raises(BadInput, match="bad --data"):
        build_config(RunConfig, {"models": "resnet18", "task": "det", "data": "coco"})


def test_det_cell_with_coco_data_times_val_images_at_their_own_aspect_ratio(tmp_path):
    """Val images of 48x80 under a 64 px det cell: short side 64, long side 107 (<= 64 * 1333 / 800),
    padded to 64x128 for the backbone; every image timed once, FPS = images / summed time."""
    from bench.data import write_coco_fixture
    from bench.tasks.det import real_image_fps

    root = write_coco_fixture(tmp_path / "coco", train_images=1, val_images=3, height=48, width=80)
    model = _detector()
    seen: list[tuple[int, ...]] = []
    model.backbone.body.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    got = real_image_fps(model, f"coco:{root}", 64, CPU, torch.float32, None, budget_s=60.0)
    assert got.images == 3 and seen == [(1, 3, 64, 128)] * 6  # 3 warm-up images (all there are), then 3 timed
    rec = got.to_record()
    assert rec["fps_real_images"] == pytest.approx(3 / got.total_s, rel=1e-3) and rec["fps_images"] == 3
    assert "batch 1" in rec["fps_protocol"] and rec["data"] == f"coco:{root}"
    assert model.transform.min_size == (64,) and model.transform.max_size == 64  # the cell's transform restored

    cfg = RunConfig(models=["resnet18"], task="det", res=[(64, 64)], budget=0.1, max_time=400, data=f"coco:{root}")
    out = step_scenario.measure_cell(CELL, ONE, cfg).to_record()
    assert out["status"] == "ok", out["error"]
    assert out["fps_images"] >= 1 and out["fps_real_images"] > 0 and out["latency_ms"] > 0


def test_a_tiny_cap_is_raised_to_a_floor_of_first_calls(monkeypatch):
    """The cap share of a short --max-time would end a part in warm-up with no sample: each part's
    cap is at least PARTS_CAP_FLOOR times its first call, and its budget is its share."""
    from bench.measure.timing import Latency
    from bench.tasks import dense as dense_task

    asked: list[dict] = []

    def fake_measure(step, device, budget_s, max_time_s, **options):
        asked.append({"budget_s": budget_s, "max_time_s": max_time_s, **options})
        return Latency(times_ms=[1.0] * 6, warmup_iters=1, warmup_ms=1.0, stop_reason="budget")

    task = task_for("seg")
    cell = Cell("resnet18", 64, 64, "infer", 1, "seg")
    model, x = task.build(cell), task.input(cell, 1, CPU, torch.float32, False)
    monkeypatch.setattr(dense_task, "measure", fake_measure)
    ticks = iter(range(10_000))  # clock reads 1 s apart: each part's first call "takes" 1 s
    monkeypatch.setattr(dense_task.time, "perf_counter", lambda: float(next(ticks)))
    rec = task.part_latency_ms(model, x, PartsSetup(budget_s=0.3, max_time_s=0.3)).to_record()
    monkeypatch.undo()
    assert len(asked) == 3 and rec["part_latency_iters"] == {"backbone": 6, "neck": 6, "head": 6}
    share = dense_task.PARTS_BUDGET_SHARE / 3
    for a in asked:
        assert a["max_time_s"] == dense_task.PARTS_CAP_FLOOR * 1.0 > 0.3 * share
        assert a["budget_s"] == pytest.approx(0.3 * share) and a["min_iters"] == dense_task.PARTS_MIN_ITERS
