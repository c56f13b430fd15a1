"""`accelerate launch --multi_gpu --num_processes 2 -m training.X --cpu` (CPU, gloo) runs a few steps of SFT and of GRPO, and both
ranks end with the same weights (each rank writes a SHA-256 of its trainable parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _launch(module: str, args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", module, *args, "--cpu", "--output-dir", str(out), "--set", "log.progress=false"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def _digests(out: Path) -> list[dict]:
    return [json.loads((out / "ranks" / f"rank_{i}.json").read_text()) for i in range(2)]


@pytest.mark.timeout(320)
def test_sft_and_grpo_on_two_processes_keep_the_ranks_in_sync(tmp_path):
    sft = tmp_path / "sft"
    _launch("training.sft", ["--config", "config/training/sft_tiny.yaml", "--set", "data.synthetic=3", "--set", "train.fit_vae_steps=2",
                             "--set", "train.max_steps=3", "--set", "train.batch_size=2", "--set", "log.save_every=3",
                             "--set", "log.sample_videos=0", "--set", "log.eval_every=3"], sft)
    d = _digests(sft)
    assert d[0]["processes"] == d[1]["processes"] == 2
    assert d[0]["weights_sha256"] == d[1]["weights_sha256"]
    assert json.loads((sft / "summary.json").read_text())["processes"] == 2

    grpo = tmp_path / "grpo"
    _launch("training.grpo", ["--config", "config/training/grpo_tiny.yaml", "--set", "data.synthetic=2",
                              "--set", "data.eval_synthetic=0", "--set", "train.epochs=2", "--set", "grpo.group_size=4",
                              "--set", "grpo.prompts_per_step=1", "--set", "grpo.train_batch_size=4",
                              "--set", "grpo.num_inner_epochs=1", "--set", "log.videos=0"], grpo)
    d = _digests(grpo)
    assert d[0]["weights_sha256"] == d[1]["weights_sha256"]
    rows = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["kl"] >= 0 for r in rows)
    assert (grpo / "lora" / "adapter_model.safetensors").is_file()


def test_only_rank_0_checks_and_creates_the_output_dir(tmp_path, monkeypatch):
    """Rank 1 starting after rank 0 began writing must not see "not empty" (a race seen on CI-like load)."""
    from training.common import prepare_output_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("rank 0 already writes\n")
    monkeypatch.setenv("RANK", "1")
    prepare_output_dir(run, resume=False)          # no check, no write
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    prepare_output_dir(tmp_path / "absent", resume=False)
    assert not (tmp_path / "absent").exists()      # rank 0 creates it
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_output_dir(run, resume=False)      # rank 0 still refuses an existing run


@pytest.mark.timeout(320)
def test_distill_on_two_processes_keeps_the_ranks_in_sync(tmp_path):
    """eva-train-distill under `accelerate launch --num_processes 2` (the 14B recipe's launcher):
    each rank draws its own prompts, the gradients are averaged, the replicas end identical."""
    import yaml

    cfg = {"model": {"kind": "tiny", "height": 32, "width": 32, "num_frames": 5, "scheduler": "euler",
                     "num_steps": 4, "hist_guidance": 1.5, "lang_guidance": 2.5},
           "data": {"twin_tasks": ["pick_block_narrow"], "twin_seeds": [0, 1], "eval_twin_seeds": [100]},
           "dmd": {"student_steps": 2, "fake_updates": 1, "regression_steps": 2, "regression_pairs": 2},
           "train": {"mode": "full", "lr": 1e-3, "fake_lr": 1e-3, "batch_size": 1, "max_steps": 2,
                     "mixed_precision": "no", "gradient_checkpointing": False},
           "log": {"log_every": 1, "save_every": 4, "eval_prompts": 0, "videos": 0}}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "distill"
    _launch("training.distill", ["--config", str(path)], out)
    d = _digests(out)
    assert d[0]["processes"] == d[1]["processes"] == 2
    assert d[0]["weights_sha256"] == d[1]["weights_sha256"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert (out / "final" / "world_model.yaml").is_file()
