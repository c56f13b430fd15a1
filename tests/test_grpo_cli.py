"""`eva-train-grpo` on the tiny model: outputs, metrics, the best-reward adapter, evaluation, and
EVA's defaults in config/training/grpo.yaml."""

from __future__ import annotations

import json

import pytest
import yaml

from training.common import load_config
from training.grpo import GRPOConfig, main

pytestmark = pytest.mark.unit

FAST = ["--set", "log.progress=false", "--set", "data.synthetic=1", "--set", "data.eval_synthetic=1",
        "--set", "train.epochs=2", "--set", "grpo.group_size=4", "--set", "grpo.prompts_per_step=1",
        "--set", "grpo.train_batch_size=4", "--set", "grpo.num_inner_epochs=1", "--set", "grpo.num_steps=4",
        "--set", "log.video_every=2", "--set", "log.videos=1", "--set", "log.eval_samples=2"]


def test_grpo_writes_metrics_media_adapters_and_evaluates(tmp_path):
    out = tmp_path / "run"
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(out), *FAST,
                 "--set", "grpo.sde_window=2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"reward_mean", "reward_std", "kl", "clip_frac", "approx_kl", "zero_spread_frac",
                "time_rollout", "time_decode", "time_reward", "time_update"} <= set(r)
        assert 0 < r["reward_mean"] <= 10 and r["kl"] >= 0
    assert (out / "reward.png").stat().st_size > 0
    assert (out / "rollouts" / "step_000002_0.mp4").is_file() and (out / "rollouts" / "step_000002_0_actions.png").is_file()
    assert (out / "lora" / "adapter_model.safetensors").is_file() and (out / "lora" / "adapter_config.json").is_file()
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["reward_mean"] == max(r["reward_mean"] for r in rows)
    assert yaml.safe_load((out / "best" / "world_model.yaml").read_text())["world_model"]["lora"].endswith("best/lora")
    assert list((out / "tb").iterdir())
    # an existing run is refused
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(out), *FAST]) == 2
    # held-out evaluation of the adapter, in a new directory
    ev = tmp_path / "eval"
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(ev), "--eval-only",
                 "--lora", str(out / "lora"), *FAST]) == 0
    res = json.loads((ev / "eval.json").read_text())
    assert res["prompts"] == 2 and res["samples_per_prompt"] == 2 and 0 < res["reward_mean_sde"] <= 10
    assert len(res["rewards_sde"]) == 4 and res["reward_mean_sde"] == pytest.approx(sum(res["rewards_sde"]) / 4)
    assert res["kl_to_reference"] > 0    # two GRPO steps moved the adapter off its reference
    # the initial model, paired sample by sample with the adapter's evaluation
    base = tmp_path / "eval_base"
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(base), "--eval-only",
                 "--baseline", str(ev / "eval.json"), *FAST]) == 0
    assert json.loads((base / "eval.json").read_text())["kl_to_reference"] is None   # no adapter
    vs = json.loads((base / "eval.json").read_text())["vs_baseline"]
    want = [a - b for a, b in zip(json.loads((base / "eval.json").read_text())["rewards_sde"], res["rewards_sde"])]
    assert vs["sde"]["n"] == 4 and vs["sde"]["mean_diff"] == pytest.approx(sum(want) / 4)
    per_prompt = [(want[0] + want[1]) / 2, (want[2] + want[3]) / 2]
    assert vs["sde"]["stderr_prompts"] == pytest.approx(abs(per_prompt[0] - per_prompt[1]) / 2)
    # a baseline of other prompts or seeds is refused, and so is a missing one
    other = tmp_path / "eval_other"
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(other), "--eval-only",
                 "--baseline", str(ev / "eval.json"), *FAST, "--set", "log.eval_samples=3"]) == 2
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(tmp_path / "x"), "--eval-only",
                 "--baseline", str(tmp_path / "missing.json"), *FAST]) == 2


def test_eva_defaults_are_the_config_defaults():
    cfg = load_config(GRPOConfig, "config/training/grpo.yaml")
    g, tr = cfg.grpo, cfg.train
    assert (tr.lr, g.group_size, g.num_steps, g.num_inner_epochs, g.clip_range, g.beta, g.adv_clip) == \
        (2e-4, 8, 40, 4, 1e-5, 0.004, 5.0)
    assert (g.timestep_fraction, tr.grad_clip, tr.weight_decay, tr.lora_rank, tr.lora_alpha) == (0.99, 1.0, 1e-4, 32, 32.0)
    from training.sft import SFTConfig

    s = load_config(SFTConfig, "config/training/sft.yaml")
    assert (s.train.lr, s.train.betas, s.train.weight_decay, s.train.warmup_steps) == (8e-6, [0.9, 0.95], 0.05, 100)
    assert (s.train.batch_size, s.train.grad_accum) == (2, 4)
    assert s.diffusion_forcing.history_probs == [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert (s.diffusion_forcing.clean_hist_prob, s.diffusion_forcing.shift) == (0.7, 3.0)


def test_grpo_needs_a_reward_idm(tmp_path, capsys):
    assert main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(tmp_path / "x"),
                 "--set", "reward.idm="]) == 2
    assert "reward: idm: required" in capsys.readouterr().err


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """--resume restores the adapter, the optimiser state and the step: 2 steps + resume to 3 give
    exactly the weights of 3 steps in one go (each step's seeds come from its index)."""
    cfg = ["--config", "config/training/grpo_tiny.yaml", *FAST, "--set", "log.save_every=1", "--set", "log.videos=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*cfg, "--output-dir", str(straight), "--set", "train.epochs=3", "--set", "log.keep=2"]) == 0
    assert main([*cfg, "--output-dir", str(split), "--set", "train.epochs=2"]) == 0
    assert main([*cfg, "--output-dir", str(split), "--set", "train.epochs=3", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    digest = lambda d: json.loads((d / "ranks" / "rank_0.json").read_text())["weights_sha256"]  # noqa: E731
    assert digest(split) == digest(straight)
    rewards = lambda d: [json.loads(x)["reward_mean"] for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rewards(split) == pytest.approx(rewards(straight), rel=1e-6)
    # killed after step 3 with its newest checkpoint at 2: the resume drops the killed run's row 3
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    shutil.rmtree(killed / "checkpoints" / "step_00000003")
    assert main([*cfg, "--output-dir", str(killed), "--set", "train.epochs=3", "--resume"]) == 0
    assert [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert digest(killed) == digest(straight) and rewards(killed) == rewards(straight)
    # an existing run needs --resume or --overwrite; --overwrite swaps in the new run when complete
    assert main([*cfg, "--output-dir", str(killed), "--set", "train.epochs=1"]) == 2
    assert main([*cfg, "--output-dir", str(killed), "--set", "train.epochs=1", "--overwrite"]) == 0
    assert [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()] == [1]
    deployed = yaml.safe_load((killed / "world_model.yaml").read_text())["world_model"]["lora"]
    assert deployed == str((killed / "lora").resolve()) and not list(tmp_path.glob(".killed*"))


@pytest.mark.parametrize("setting, needle", [
    ("grpo.group_sise=4", "grpo: group_sise: unknown key; did you mean 'group_size'?"),
    ("grpo.group_size=1", "grpo: group_size: must be >= 2, got 1"),
    ("reward.batch_size=true", "reward: batch_size: expected int"),
    ("model.tiny.ffn_dimm=8", "model.tiny: ffn_dimm: unknown key; did you mean 'ffn_dim'?"),
])
def test_a_typo_at_any_depth_is_refused_before_the_output_directory(tmp_path, capsys, setting, needle):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(open("config/training/grpo_tiny.yaml").read())
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for argv in (["--set", setting], ["--set", setting, "--eval-only"]):
        assert main(["--config", str(cfg), "--output-dir", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{cfg}: {needle}" in err, err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_typo_in_the_yaml_file_itself_is_refused_by_name(tmp_path, capsys):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(open("config/training/grpo_tiny.yaml").read().replace("  clip_range:", "  clip_rang:"))
    assert main(["--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    assert f"{cfg}: grpo: clip_rang: unknown key; did you mean 'clip_range'?" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
