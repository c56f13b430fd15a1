"""Diffusion-forcing SFT: the noise recipe (eva_core/world_model/diffusion_forcing.py) and
`eva-train-sft` on the tiny model with synthetic episodes (the loss falls; resume; safe outputs)."""

from __future__ import annotations

import json

import pytest
import torch

from eva_core.world_model import diffusion_forcing as df

pytestmark = pytest.mark.unit


def test_history_lengths_follow_evas_distribution_and_leave_a_future_frame():
    gen = torch.Generator().manual_seed(0)
    n = df.sample_history_lengths(20000, 13, generator=gen)
    freq = torch.bincount(n, minlength=7)[1:].float() / len(n)
    assert torch.allclose(freq, torch.tensor(df.HISTORY_PROBS), atol=0.015)
    short = df.sample_history_lengths(2000, 3, generator=gen)
    assert int(short.max()) == 2 and int(short.min()) == 1  # capped: at least one future frame


def test_training_noise_levels_history_clean_probability_and_shift():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4000, 2, 5, 1, 1, generator=gen)
    b = df.add_training_noise(x0, gen, clean_hist_prob=0.7, shift=3.0)
    hist = ~b.future_mask
    assert torch.equal(hist.sum(1), b.hist_len)
    h_sig = b.sigmas[:, 0]  # frame 0 is always history
    assert abs(float((h_sig == 0).float().mean()) - 0.7) < 0.03
    f_sig = b.sigmas[:, -1]  # the last frame is always future: one level for all future frames
    rows = b.future_mask.all(0)
    assert rows[-1]
    same = [torch.equal(b.sigmas[i, b.future_mask[i]], f_sig[i].expand(int(b.future_mask[i].sum()))) for i in range(50)]
    assert all(same)
    # shift 3 pushes levels up: median of s·u/(1+2u) with u ~ U(0,1) is 0.75
    assert abs(float(f_sig.median()) - 0.75) < 0.03
    assert torch.allclose(b.timesteps, b.sigmas * 1000)
    s = b.sigmas.view(-1, 1, 5, 1, 1)
    noise = b.target + x0
    assert torch.allclose(b.noisy, (1 - s) * x0 + s * noise, atol=1e-6)


def test_loss_is_on_future_frames_only():
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 4, 2, 2, generator=gen)
    b = df.add_training_noise(x0, gen)
    pred = b.target.clone()
    assert float(df.masked_flow_loss(pred, b)) == 0.0
    pred[~b.future_mask.view(3, 1, 4, 1, 1).expand_as(pred)] += 10.0  # wrong on history frames only
    assert float(df.masked_flow_loss(pred, b)) == 0.0
    pred[b.future_mask.view(3, 1, 4, 1, 1).expand_as(pred)] += 1.0
    assert float(df.masked_flow_loss(pred, b)) == pytest.approx(1.0)


def _run(argv):
    from training.sft import main

    return main(argv)


def test_sft_loss_falls_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["--config", "config/training/sft_tiny.yaml", "--set", "log.progress=false", "--set", "train.fit_vae_steps=0",
              "--set", "data.synthetic=4", "--set", "log.sample_videos=1"]
    assert _run([*common, "--output-dir", str(out), "--set", "train.max_steps=60", "--set", "log.eval_every=60",
                 "--set", "log.save_every=30"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["last_eval_loss"] < 0.8 * summary["first_eval_loss"]
    assert (out / "final" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "samples" / "step_00000060_0.mp4").stat().st_size > 0
    assert list((out / "tb").iterdir())
    # an existing run is never overwritten; --resume continues from its newest checkpoint
    assert _run([*common, "--output-dir", str(out)]) == 2
    assert _run([*common, "--output-dir", str(out), "--resume", "--set", "train.max_steps=70",
                 "--set", "log.eval_every=70"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 70 and 61 not in steps[:steps.index(60) + 1]
    assert (out / "checkpoints" / "step_00000070").is_dir()


def test_sft_lora_mode_writes_an_adapter_the_world_model_loads(tmp_path):
    from eva_core.world_model import WorldModel, WorldModelConfig
    import yaml

    out = tmp_path / "lora_run"
    assert _run(["--config", "config/training/sft_tiny.yaml", "--output-dir", str(out), "--set", "log.progress=false",
                 "--set", "data.synthetic=3", "--set", "train.fit_vae_steps=0", "--set", "train.mode=lora", "--set", "train.lora_rank=4",
                 "--set", "train.lora_alpha=4", "--set", "train.max_steps=5", "--set", "log.sample_videos=0"]) == 0
    deploy = yaml.safe_load((out / "final" / "world_model.yaml").read_text())["world_model"]
    assert deploy["lora"].endswith("final/lora")
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(**{k: v for k, v in deploy.items() if k != "kind"}))
    frames = wm.generate(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(), "x", seed=0)
    assert frames.shape == (9, 32, 32, 3)


def test_config_errors_are_one_line_and_name_the_key(tmp_path, capsys):
    rc = _run(["--config", "config/training/sft_tiny.yaml", "--output-dir", str(tmp_path / "x"),
               "--set", "train.warmup_step=5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "sft_tiny.yaml: train: warmup_step: unknown key; did you mean 'warmup_steps'?" in err
    rc = _run(["--config", "config/training/sft_tiny.yaml", "--output-dir", str(tmp_path / "y"),
               "--set", "diffusion_forcing.clean_hist_prob=1.5"])
    assert rc == 2 and "clean_hist_prob" in capsys.readouterr().err


@pytest.mark.parametrize("edit, needle", [
    (("train", "warmup_step", 5), "train: warmup_step: unknown key; did you mean 'warmup_steps'?"),
    (("diffusion_forcing", "clean_hist_prbo", 0.5),
     "diffusion_forcing: clean_hist_prbo: unknown key; did you mean 'clean_hist_prob'?"),
    (("model", "num_frame", 9), "model: num_frame: unknown key; did you mean 'num_frames'?"),
    (("model", "tiny", {"num_layer": 2}), "model.tiny: num_layer: unknown key; did you mean 'num_layers'?"),
    (("train", "lr", "fast"), "train: lr: expected float"),
    (("log", "save_every", 0), "log: save_every: must be >= 1, got 0"),
    (("trian", "lr", 1.0), "trian: unknown key; did you mean 'train'?"),
])
def test_a_yaml_typo_at_any_depth_is_refused_before_the_output_directory(tmp_path, capsys, edit, needle):
    import yaml

    section, key, value = edit
    data = yaml.safe_load(open("config/training/sft_tiny.yaml"))
    data.setdefault(section, {})[key] = value
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert _run(["--config", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: {needle}" in err, err
    assert not out.exists()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_a_killed_and_resumed_run_matches_the_uninterrupted_one_bit_for_bit(tmp_path):
    """Exact resume (accelerate's skip_first_batches over a seeded, epoch-indexed sampler): a run
    'killed' after step 5 with its checkpoint at 4 (mid-epoch: 12 clips in batches of 2 x 2 accumulated
    make 3 steps an epoch), resumed, equals an uninterrupted 6-step run;
    metrics.jsonl holds each step once and summary.json keeps the first evaluation."""
    import shutil

    common = ["--config", "config/training/sft_tiny.yaml", "--set", "log.progress=false",
              "--set", "train.fit_vae_steps=0", "--set", "data.synthetic=4", "--set", "data.synthetic_frames=24",
              "--set", "log.sample_videos=0", "--set", "train.batch_size=2", "--set", "train.grad_accum=2",
              "--set", "log.log_every=1", "--set", "log.eval_every=100", "--set", "log.save_every=2",
              "--set", "log.keep=2", "--cpu"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run([*common, "--output-dir", str(full), "--set", "train.max_steps=6"]) == 0
    assert _run([*common, "--output-dir", str(killed), "--set", "train.max_steps=5"]) == 0
    shutil.rmtree(killed / "checkpoints" / "step_00000005")  # killed after step 5: the checkpoint at 4 is the newest
    (killed / "summary.json").unlink()
    assert _run([*common, "--output-dir", str(killed), "--set", "train.max_steps=6", "--resume"]) == 0

    def rows(out):
        return [{k: v for k, v in json.loads(line).items() if k != "s_per_step"}
                for line in (out / "metrics.jsonl").read_text().splitlines()]

    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same batches after the resume
    assert rows(killed) == rows(full)  # each step once, same losses, bit for bit
    assert [r["step"] for r in rows(killed)] == [0, 1, 2, 3, 4, 5, 6, 6]  # eval at 0 and 6, train 1..6
    summary, want = json.loads((killed / "summary.json").read_text()), json.loads((full / "summary.json").read_text())
    assert summary["first_eval_loss"] is not None and summary["first_eval_loss"] == want["first_eval_loss"]
    assert summary["last_eval_loss"] == want["last_eval_loss"]
    # TensorBoard: the resumed writer's purge_step drops the killed run's events past the checkpoint
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(out):
        acc = EventAccumulator(str(out / "tb"))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("train/loss")]

    assert scalars(killed) == scalars(full) and [s for s, _ in scalars(killed)] == [1, 2, 3, 4, 5, 6]


def test_an_existing_run_needs_resume_or_overwrite_and_overwrite_swaps_in_a_complete_run(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--config", "config/training/sft_tiny.yaml", "--set", "log.progress=false", "--cpu",
              "--set", "train.fit_vae_steps=0", "--set", "data.synthetic=3", "--set", "data.synthetic_frames=12",
              "--set", "log.sample_videos=0", "--set", "train.max_steps=1", "--output-dir", str(out)]
    assert _run(common) == 0
    capsys.readouterr()
    assert _run(common) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--resume" in err and "--overwrite" in err
    assert _run([*common, "--resume", "--overwrite"]) == 2
    # a failing --overwrite (a missing data source) leaves the old run as it was
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert _run([*common, "--overwrite", "--set", f"data.sources=[{tmp_path / 'missing'}]"]) == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    (out / "marker").write_text("old run")
    assert _run([*common, "--overwrite", "--set", "train.max_steps=2"]) == 0
    assert not (out / "marker").exists() and json.loads((out / "summary.json").read_text())["steps"] == 2
    import yaml

    deployed = yaml.safe_load((out / "final" / "world_model.yaml").read_text())["world_model"]
    assert deployed["transformer_dir"] == str((out / "final" / "transformer").resolve())  # the final place
    assert not list(tmp_path.glob(".run*"))  # no sibling left behind


def test_truncate_jsonl_keeps_the_rows_up_to_the_resumed_step(tmp_path):
    from training.common import read_jsonl, truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (0, 1, 2, 3, 2)))
    truncate_jsonl(path, 2)
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 2]
    truncate_jsonl(path, -1)  # a resume without a checkpoint starts over
    assert path.read_text() == ""
    truncate_jsonl(tmp_path / "missing.jsonl", 3)
    assert not (tmp_path / "missing.jsonl").exists()
