"""Deployment closes the loop: train a few tiny steps (SFT full, then GRPO LoRA on top), point a
planner config at what training wrote, and plan a chunk through the ROS graph with it (best of 2)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")

from eva_ros.testing import NodeProcess, Probe, ros_env, unique_domain_id, wait_for, write_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(240)]


def _train(tmp_path):
    from training.grpo import main as grpo_main
    from training.sft import main as sft_main

    sft = tmp_path / "sft"
    assert sft_main(["--config", "config/training/sft_tiny.yaml", "--output-dir", str(sft), "--set", "log.progress=false",
                     "--set", "data.synthetic=2", "--set", "train.max_steps=3", "--set", "train.fit_vae_steps=3", "--set", "log.sample_videos=0"]) == 0
    sft_deploy = yaml.safe_load((sft / "final" / "world_model.yaml").read_text())["world_model"]
    grpo = tmp_path / "grpo"
    assert grpo_main(["--config", "config/training/grpo_tiny.yaml", "--output-dir", str(grpo),
                      "--set", "log.progress=false", "--set", f"model.transformer_dir={sft_deploy['transformer_dir']}",
                      "--set", f"model.vae_dir={sft_deploy['vae_dir']}",
                      "--set", "data.synthetic=1", "--set", "data.eval_synthetic=0", "--set", "train.epochs=2",
                      "--set", "grpo.group_size=4", "--set", "grpo.prompts_per_step=1", "--set", "grpo.train_batch_size=4",
                      "--set", "grpo.num_inner_epochs=1", "--set", "log.videos=0", "--set", "train.lr=0.05"]) == 0
    return yaml.safe_load((grpo / "world_model.yaml").read_text())["world_model"]


def _world_model(cfg):
    from eva_core.world_model import WorldModel, WorldModelConfig

    cfg = {k: v for k, v in cfg.items() if k != "kind"}
    return WorldModel.from_config(WorldModelConfig.tiny_default(**cfg))


def test_planner_plans_with_the_trained_base_and_adapter(tmp_path):
    from sensor_msgs.msg import Image

    from eva_ros import qos
    from eva_ros.conversions import image_to_msg, msg_to_chunk

    deploy = _train(tmp_path)
    assert deploy["transformer_dir"].endswith("sft/final/transformer") and deploy["lora"].endswith("grpo/lora")
    assert deploy["vae_dir"].endswith("sft/final/vae")
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    planner_wm = {**deploy, "best_of": 2, "reward_idm": "random_tiny"}  # + rejection sampling in the planner
    expected = _world_model(planner_wm).generate(img, "stack the cups", seed=7)
    base = _world_model({k: v for k, v in deploy.items() if k not in ("lora", "transformer_dir", "vae_dir")})
    assert np.abs(base.generate(img, "stack the cups", seed=7).astype(int) - expected).mean() > 2  # training changed it

    domain = unique_domain_id()
    params = write_params(tmp_path / "planner.yaml", base=None, overrides={"planner": {
        "camera_topic": "/cam", "instruction": "stack the cups", "seed": 7, "warmup": False, "max_obs_age": 5.0,
        "torch_threads": 1, "world_model": planner_wm}})
    probe = Probe(domain)
    node = NodeProcess("eva-planner-node", params, ros_env(domain), tmp_path, "planner")
    try:
        probe.subscribe("/eva/plan/frames", Image, qos.PLAN)
        cam = probe.publisher("/cam", Image, qos.IMAGE)
        msg = wait_for(lambda: node.alive() and (cam.publish(image_to_msg(img, time.time())) or
                                                 probe.received("/eva/plan/frames")),
                       180, period=0.2, what=f"a planned chunk; planner log:\n{node.tail()}")[0]
        frames, meta = msg_to_chunk(msg)
        assert meta.chunk_id == 0 and frames.shape == expected.shape
        # the graph's chunk is the trained model's (not the base's) up to float rounding
        assert np.abs(frames.astype(int) - expected).mean() < 0.5
    finally:
        node.stop()
        probe.close()
