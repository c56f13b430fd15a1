"""`eva-demo` (what `make demo` runs) closes the loop in simulation and leaves its artifacts."""

import json
import subprocess

import imageio.v3 as iio
import pytest

from eva_ros.testing import BIN, ros_env, unique_domain_id, write_params

# the closed loop itself is e2e; the input checks and the report reading are unit tests
pytestmark = pytest.mark.unit


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_runs_the_closed_loop_in_simulation(tmp_path):
    env = ros_env(unique_domain_id())
    out = tmp_path / "demo"
    exe = BIN / "eva-demo"
    # config/sim.yaml with each chunk spanning 4 s instead of 2: on a loaded 2-core CI host planning
    # once took longer than a chunk lasts, and every chunk expired before it reached the arm
    config = write_params(tmp_path / "sim_slow.yaml", "sim.yaml", {"planner": {"world_model": {"fps": 4.0}}})
    proc = subprocess.run([str(exe), "--duration", "8", "--config", str(config), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    s = json.loads((out / "report.json").read_text())["summary"]
    assert s["chunks_planned"] > 0 and s["trajectories_executed"] > 0 and s["commands_sent"] > 0, s
    assert s["limit_violations"] == 0
    video = iio.imread(out / "rollout.mp4")
    assert video.ndim == 4 and video.shape[0] > 5 and video.std() > 5  # rendered frames, not blank
    for name in ("actions.png", "scores.png"):
        assert (out / name).stat().st_size > 10_000


def test_bad_inputs_fail_in_one_line_before_ros_starts(tmp_path, capsys):
    from eva_ros.demo import main

    assert main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eva-demo: ") and "missing.yaml" in err and "not found" in err
    (tmp_path / "a_file").write_text("x")
    assert main(["--out", str(tmp_path / "a_file" / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a_file is not a directory" in err
    assert not (tmp_path / "o").exists()


def test_trained_mode_bad_checkpoints_fail_in_one_line_before_ros_starts(tmp_path, capsys):
    """A checkpoint directory with a manifest but without the checkpoint folders is named, exit 2."""
    from eva_ros.demo import main

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "manifest.json").write_text('{"config": {}, "files": {}}')
    assert main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eva-demo: ") and "missing checkpoint directory" in err
    (ckpt / "manifest.json").write_text("{not json")
    assert main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: unreadable" in err
    assert main(["--checkpoints", str(ckpt), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_twin_task_success_is_read_from_the_bringup_report(tmp_path):
    """The twin task's success reaches the demo through eva-bringup's report JSON: the controller's
    `arm` report (eva_ros.backends.sim_arm); no report, no task or no check: None."""
    from eva_ros.demo.runs import read_report, twin_task_success

    def report(arm):
        return {"summary": {}, "nodes_report": {"camera": {"kind": "camera", "frames": 3},
                                                "controller": {"kind": "controller", "commands_sent": 5, "arm": arm}}}

    for success in (True, False):
        path = tmp_path / f"r_{success}.json"
        path.write_text(json.dumps(report({"twin_task": {"task": "push_block", "seed": 1000, "success": success}})))
        assert twin_task_success(read_report(path)) is success
    assert twin_task_success(report({})) is None                                       # no twin task
    assert twin_task_success(report({"twin_task": {"task": "push_block", "seed": 1, "success": None}})) is None
    assert twin_task_success({"summary": {}, "nodes_report": {"camera": {"kind": "camera"}}}) is None
    assert read_report(tmp_path / "never_written.json") is None                        # the graph died
    (tmp_path / "torn.json").write_text("{")
    assert read_report(tmp_path / "torn.json") is None and twin_task_success(None) is None


def test_sim_arm_reports_its_twin_task_after_close():
    """The sim arm's report (what the controller puts under `arm`) holds the task's success check
    once closed, the same value its stderr line says; without a task it is empty."""
    from eva_core.embodiment import load_embodiment
    from eva_ros.backends.sim_arm import SimArm

    emb = load_embodiment()
    arm = SimArm(emb, {"twin": "report_test", "task": "push_block", "seed": 1000})
    assert arm.report() == {"twin_task": {"task": "push_block", "seed": 1000, "success": None}}
    arm.connect()
    arm.close()
    got = arm.report()["twin_task"]
    assert got["task"] == "push_block" and got["seed"] == 1000 and got["success"] is False   # nothing pushed
    assert SimArm(emb, {"twin": "report_test_none"}).report() == {}


def test_the_student_is_the_deployed_variant_and_the_teacher_sft_and_best_of_n_are_compared(tmp_path):
    """With world_model_student.yaml in the export the student (paths resolved against the export)
    runs first, deployed; --no-compare keeps it alone. Without it, GRPO is deployed as before."""
    import yaml

    from eva_ros.demo.evaluation import variant_label, variants

    ckpt = tmp_path / "ckpt"
    model = {"kind": "tiny", "scheduler": "euler", "num_steps": 8}
    old = variants(ckpt, model, True, 4)
    assert list(old) == ["grpo", "sft", "sft_best_of_4"]
    assert old["grpo"]["lora"] == str(ckpt / "lora") and old["grpo"]["transformer_dir"] == str(ckpt / "transformer")
    assert list(variants(ckpt, model, False, 4)) == ["grpo"]
    ckpt.mkdir()
    (ckpt / "world_model_student.yaml").write_text(yaml.safe_dump({"world_model": {
        **model, "transformer_dir": "student/transformer", "vae_dir": "vae", "sampler": "student", "student_steps": 2}}))
    table = variants(ckpt, model, True, 4)
    assert list(table) == ["student", "grpo", "sft", "sft_best_of_4"]
    s = table["student"]
    assert s["transformer_dir"] == str(ckpt / "student" / "transformer") and s["vae_dir"] == str(ckpt / "vae")
    assert s["sampler"] == "student" and s["student_steps"] == 2 and "best_of" not in s
    assert table["grpo"]["lora"] == str(ckpt / "lora") and table["sft_best_of_4"]["best_of"] == 4
    assert list(variants(ckpt, model, False, 4)) == ["student"]
    assert variant_label("student", s, True) == "distilled student, 2 transformer calls per chunk, deployed"
    assert variant_label("grpo", table["grpo"], False) == "GRPO (euler x 8), the aligned model the student is distilled from"
    assert variant_label("grpo", table["grpo"], True) == "GRPO (euler x 8), deployed"
    (ckpt / "world_model_student.yaml").write_text("[not a mapping")
    from eva_core.cli import UserError

    with pytest.raises(UserError, match="world_model_student.yaml: unreadable"):
        variants(ckpt, model, True, 4)


def test_the_committed_student_matches_its_manifest_and_plans_a_chunk_in_two_calls():
    """checkpoints/demo's student: every file hashed in manifest.json (with how it was made), its
    world_model_student.yaml loads as eva-demo deploys it and samples a chunk with K = 2 calls."""
    import hashlib
    from pathlib import Path

    import numpy as np

    from eva_core.world_model import build_world_model
    from eva_ros.demo.evaluation import variants

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
    m = json.loads((ckpt / "manifest.json").read_text())
    for name in ("world_model_student.yaml", "student/transformer/diffusion_pytorch_model.safetensors"):
        assert hashlib.sha256((ckpt / name).read_bytes()).hexdigest() == m["files"][name]["sha256"], name
    assert m["total_bytes"] <= 20e6
    st = m["student"]
    assert st["steps"] == 190 and st["student_steps"] == 2 and st["seed"] == 0 and "eva-train-distill" in st["command"]
    wm_cfg = variants(ckpt, m["config"]["model"], False, 4)["student"]
    wm = build_world_model({**wm_cfg, "device": "cpu"})
    frame = np.full((wm.height, wm.width, 3), 128, np.uint8)
    video = wm.generate(frame, "pick up the red block", seed=0)
    assert video.shape[0] == wm_cfg["num_frames"] and wm.last_info["steps"] == 2


def test_rollout_frames_of_an_episode_without_chunks_have_the_shape_of_one_with_chunks():
    """eva-demo stacks every deployed episode's frames into one video: an episode whose generated
    chunks never reached the recorder must not change the frame shape (it crashed the video)."""
    import numpy as np

    from eva_ros.demo.recorder import video_frames

    cams = [(0.1 * i, np.zeros((48, 64, 3), np.uint8)) for i in range(3)]
    chunks = [(0.0, 1, np.zeros((9, 48, 64, 3), np.uint8))]
    with_chunks, without = video_frames(cams, chunks, 240, "a"), video_frames(cams, [], 240, "b")
    assert with_chunks[0].shape == without[0].shape == (240, 640, 3)


def test_rollout_frames_before_and_after_the_first_chunk_have_one_shape():
    """Camera frames before the first chunk get a blank plan panel of the chunk panel's width, and
    every frame of the video has one size even if a camera frame of another size slipped in
    (np.stack of the rollout failed once in eva-demo: "all input arrays must have the same shape")."""
    import numpy as np

    from eva_ros.demo.recorder import video_frames

    cams = [(0.1 * i, np.zeros((48, 64, 3), np.uint8)) for i in range(4)] + [(0.5, np.zeros((50, 70, 3), np.uint8))]
    chunks = [(0.15, 1, np.zeros((9, 48, 64, 3), np.uint8))]
    frames = video_frames(cams, chunks, 240, "a")
    assert len({f.shape for f in frames}) == 1 and frames[0].shape == (240, 640, 3)
    np.stack(frames)
