"""bench finetune: real learning on CPU through the COCO and ADE20K loaders (fixtures written by
the synthetic generator), under torchrun and Slurm. The metrics, the command's input errors and
checkpoint loading are in tests/unit/tasks/test_finetune.py."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from bench.data import write_ade20k_fixture, write_coco_fixture
from bench.record import RunDir

pytest_plugins = ["slurm_cluster"]  # its fixture slurm_one: a private one-node Slurm cluster

# Every record carries these, whatever the task.
COMMON_FIELDS = {
    "model", "family", "res", "height", "width", "mode", "task", "steps", "batch", "device", "dtype", "engine",
    "world_size", "params", "pretrained", "checkpoint", "checkpoint_unused_keys", "loss_curve", "loss_first",
    "loss_last", "loss_last_mean", "step_time_ms", "throughput", "peak_mem_mb", "lr", "status", "error",
    "timestamp", "cell_key", "run_id",
}
DET_FIELDS = {"map", "ap50", "ap75", "untrained_map", "untrained_ap50"}
SEG_FIELDS = {"miou", "pixel_acc", "untrained_miou", "majority_miou"}


def run_finetune_cli(*args: str, timeout: float = 600, launcher: list[str] | None = None,
                     env: dict | None = None) -> subprocess.CompletedProcess:
    """The command in a fresh process, as a user runs it (a fresh process also lets the CLI switch
    off denormals before torch starts its worker threads)."""
    cmd = [*(launcher or [sys.executable]), "-m", "bench.cli", "finetune", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


# ---------------------------------------------------------------------------- end to end


def _records(out: Path) -> list[dict]:
    return RunDir(out).records()  # records.jsonl, and each SLURM job's shard


def test_every_family_runs_both_tasks_and_records_the_start(tmp_path):
    """Smoke over the three families and both heads on the synthetic source: complete records,
    and pretrained/scratch recorded per backbone."""
    from models import create_model

    checkpoint = tmp_path / "pvt_tiny.pth"
    torch.save({"model": create_model("pvt_tiny").state_dict()}, checkpoint)
    for task, fields in (("det", DET_FIELDS), ("seg", SEG_FIELDS)):
        out = tmp_path / task
        proc = run_finetune_cli(
            "--task", task, "--models", "pvt_tiny,vit_t,resnet18", "--res", "64", "--steps", "2", "--batch", "2",
            "--train-images", "4", "--val-images", "2", "--fpn-channels", "32",
            "--checkpoint", f"pvt_tiny={checkpoint}", "--out", str(out),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = _records(out)
        assert [r["model"] for r in records] == ["pvt_tiny", "vit_t", "resnet18"]
        assert [r["family"] for r in records] == ["pvt", "vit", "resnet"]
        for r in records:
            assert r["status"] == "ok", r.get("error")
            assert COMMON_FIELDS | fields <= set(r), (COMMON_FIELDS | fields) - set(r)
            assert r["mode"] == task and r["cell_key"] == f"{task}|{r['model']}|64|{task}|2"
            assert len(r["loss_curve"]) == 2 and r["world_size"] == 1 and r["engine"] == "none"
        pvt, vit, resnet = records
        assert pvt["pretrained"] and pvt["checkpoint"] == str(checkpoint)
        assert "head.weight" in pvt["checkpoint_unused_keys"]
        assert not vit["pretrained"] and vit["checkpoint"] is None and not resnet["pretrained"]
        env = json.loads((out / "env.json").read_text())
        assert env["kind"] == "finetune" and env["settings"]["task"] == task


def _assert_loss_falls(record: dict) -> None:
    assert record["loss_last_mean"] < 0.7 * record["loss_first_mean"], record["loss_curve"]


def test_segmentation_learns_through_the_ade20k_loader(tmp_path):
    root = write_ade20k_fixture(tmp_path / "ade", train_images=192, val_images=32, height=64, width=64, seed=0)
    out = tmp_path / "out"
    proc = run_finetune_cli(
        "--task", "seg", "--models", "resnet18", "--res", "64", "--steps", "60", "--batch", "8", "--lr", "1e-3",
        "--data", f"ade20k:{root}", "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = _records(out)
    assert r["status"] == "ok" and r["data"] == f"ade20k:{root}" and r["num_classes"] == 4
    _assert_loss_falls(r)
    # Well clear of the same network untrained and of "everything is background".
    assert r["miou"] > r["untrained_miou"] + 0.15, r
    assert r["miou"] > r["majority_miou"] + 0.1, r
    assert r["pixel_acc"] > r["majority_pixel_acc"], r


def test_detection_learns_through_the_coco_loader(tmp_path):
    root = write_coco_fixture(tmp_path / "coco", train_images=192, val_images=32, height=64, width=64, seed=0)
    out = tmp_path / "out"
    # From scratch on CPU: a narrower FPN and the GroupNorm head (torchvision's v2) learn in 200
    # steps what the paper's head needs far longer for.
    proc = run_finetune_cli(
        "--task", "det", "--models", "resnet18", "--res", "64", "--steps", "200", "--batch", "8", "--lr", "3e-4",
        "--fpn-channels", "128", "--head-norm", "gn", "--data", f"coco:{root}", "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = _records(out)
    assert r["status"] == "ok" and r["num_classes"] == 4 and r["head_norm"] == "gn" and r["lr"] == 3e-4
    _assert_loss_falls(r)
    assert r["ap50"] > r["untrained_ap50"] + 0.2, r
    assert r["map"] > r["untrained_map"] + 0.04, r


# ---------------------------------------------------------------------------- engines


@pytest.mark.multiproc
def test_ddp_two_ranks_under_torchrun(tmp_path):
    """Two gloo ranks: one record, written once, scored on both ranks' shards; vit_t's unread
    stride-4 branch would make DDP fail if it were not frozen."""
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29631"]
    proc = run_finetune_cli(
        "--task", "det", "--models", "vit_t", "--res", "64", "--steps", "3", "--batch", "2", "--train-images", "8",
        "--val-images", "4", "--fpn-channels", "32", "--engine", "ddp", "--out", str(out),
        launcher=torchrun, env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = _records(out)
    assert r["status"] == "ok" and (r["engine"], r["world_size"], r["global_batch"]) == ("ddp", 2, 4)
    assert len(r["loss_curve"]) == 3 and r["frozen_unreached_params"]


@pytest.mark.multiproc
def test_deepspeed_zero2_two_ranks_under_torchrun(tmp_path):
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29632"]
    proc = run_finetune_cli(
        "--task", "seg", "--models", "resnet18", "--res", "64", "--steps", "3", "--batch", "2", "--train-images", "8",
        "--val-images", "4", "--fpn-channels", "32", "--engine", "deepspeed", "--zero", "2", "--out", str(out),
        launcher=torchrun, env={"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = _records(out)
    assert r["status"] == "ok" and (r["engine"], r["zero"], r["world_size"]) == ("deepspeed", 2, 2)
    assert len(r["loss_curve"]) == 3


def test_signal_stops_between_cells_and_a_rerun_resumes(tmp_path):
    """SLURM's preemption signal: the cell under way finishes, the sweep stops with exit 99, and
    the same command again runs only the cells not yet recorded."""
    import signal
    import time

    out = tmp_path / "out"
    args = ["--task", "seg", "--models", "resnet18,vit_t,pvt_tiny", "--res", "64", "--steps", "3", "--batch", "2",
            "--train-images", "4", "--val-images", "2", "--fpn-channels", "32", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "finetune", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "records.jsonl").exists() or not _records(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # while the second cell runs
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 99, stderr[-2000:]
    assert [r["model"] for r in _records(out)] == ["resnet18", "vit_t"]
    again = run_finetune_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipping 2 finished cells" in again.stderr
    assert [r["model"] for r in _records(out)] == ["resnet18", "vit_t", "pvt_tiny"]


@pytest.mark.slurm
@pytest.mark.multiproc
def test_two_srun_tasks_fine_tune_as_two_ddp_ranks(slurm_one, tmp_path):
    """Under SLURM without torchrun: each srun task is a rank (SLURM_PROCID / SLURM_NTASKS)."""
    out = tmp_path / "out"
    script = tmp_path / "job.sbatch"
    command = [sys.executable, "-m", "bench.cli", "finetune", "--task", "seg", "--models", "resnet18", "--res", "64",
               "--steps", "2", "--batch", "2", "--train-images", "8", "--val-images", "4", "--fpn-channels", "32",
               "--engine", "ddp", "--out", str(out)]
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        f"cd {REPO}\nexport PYTHONPATH={REPO} OMP_NUM_THREADS=1\n"
        f"srun {shlex.join(command)}\n"
    )
    submitted = slurm_one.run("sbatch", str(script))
    job = submitted.stdout.split()[-1]
    log = tmp_path / f"slurm-{job}.out"
    assert slurm_one.wait_job(job, timeout=300) == ["COMPLETED"], log.read_text() if log.exists() else slurm_one.logs()
    (r,) = _records(out)
    assert r["status"] == "ok" and (r["engine"], r["world_size"]) == ("ddp", 2)


def test_capped_validation_split_without_boxes_is_refused(tmp_path):
    """--val-images N keeping only images with no box would score mAP 0: refused, not scored."""
    from bench.config import FinetuneConfig
    from bench.errors import BadInput
    from bench.scenarios.finetune import open_splits

    root = write_coco_fixture(tmp_path / "c", train_images=4, val_images=3, height=64, width=64)
    (ann,) = (root / "annotations").glob("*val*")
    data = json.loads(ann.read_text())
    first = min(image["id"] for image in data["images"])
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    ann.write_text(json.dumps(data))
    config = FinetuneConfig(models=["resnet18"], task="det", data=f"coco:{root}", val_images=1)
    with pytest.raises(BadInput, match="hold no box"):
        open_splits(config, 64, 64)
    config.val_images = 3
    assert len(open_splits(config, 64, 64).val) == 3
