"""eva-train-idm: learning is shown on the synthetic set; resume, export and augmentation work."""

import json

import numpy as np
import pytest
import torch

from eva_core.idm import load_idm
from training.train_idm import augment, run, split_by_episode

COMMON = ["--variant", "tiny", "--threads", "1", "--no-progress", "--synthetic-size", "64"]


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_learns_below_the_predict_the_mean_baseline(tmp_path, fusion):
    """Trains 400 steps on 128 short synthetic episodes; can fail if the model/pipeline is broken."""
    m = run(["--synthetic", "128", "--synthetic-frames", "8", "--max-steps", "400", "--eval-every", "400",
             "--flip", "0.5", "--fusion", fusion, "--out", str(tmp_path / "run"), *COMMON])
    assert m["mae"] < m["baseline_mae"]
    # Joint 1 sets the whole arm's direction in the picture: it must be learned clearly.
    for j in ("left_joint1", "right_joint1"):
        assert m["per_joint_mae"][j] < 0.6 * m["per_joint_baseline_mae"][j]
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["mae"] == pytest.approx(m["mae"]) and saved["val_episodes"] >= 1
    assert saved["fusion"] == fusion and load_idm(tmp_path / "run" / "idm").config.fusion == fusion
    assert (tmp_path / "run" / "loss.png").exists()
    assert list((tmp_path / "run").glob("tb/**/events.out.tfevents*"))


def test_resume_export_and_eval_only(tmp_path):
    out = tmp_path / "run"
    args = ["--synthetic", "6", "--synthetic-frames", "10", "--out", str(out), "--save-every", "5",
            "--eval-every", "5", "--batch-size", "8", *COMMON]
    run([*args, "--max-steps", "10"])
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_00000005", "step_00000010"]
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["step"] == 10
    m = run([*args, "--max-steps", "15", "--resume", "auto", "--export-eva", str(tmp_path / "IDM.pt")])
    assert json.loads((out / "eval.json").read_text())["step"] == 15
    assert sorted(c.name for c in (out / "checkpoints").glob("step_*")) == ["step_00000010", "step_00000015"]
    final = load_idm(out / "idm")
    exported = load_idm(tmp_path / "IDM.pt")
    video = torch.rand(4, 3, 64, 64)
    assert torch.allclose(final.predict(video), exported.predict(video), atol=1e-5)
    assert torch.allclose(exported.action_std, final.action_std)
    again = run(["--eval-only", str(tmp_path / "IDM.pt"), "--data", str(out / "synthetic_data"),
                 "--out", str(tmp_path / "eval"), *COMMON])
    assert again["mae"] == pytest.approx(m["mae"], rel=1e-4)  # same val split, same weights


def test_init_from_an_eva_pt_without_stats_takes_the_train_stats(tmp_path):
    from eva_core.idm import IDMConfig, build_idm, export_eva_pt

    src = build_idm(IDMConfig(variant="tiny"))
    path = export_eva_pt(src, tmp_path / "init.pt")
    raw = torch.load(path, weights_only=True)
    del raw["train_mean"], raw["train_std"]
    torch.save(raw, path)
    run(["--synthetic", "4", "--synthetic-frames", "6", "--max-steps", "2", "--init", str(path),
         "--out", str(tmp_path / "ft"), *COMMON])
    tuned = load_idm(tmp_path / "ft" / "idm")
    assert not torch.allclose(tuned.action_std, torch.ones(14))  # stats from the synthetic episodes
    assert torch.all(tuned.action_mean[[1, 8]] > 1.0)  # joint 2 lives around 1.57 rad


def test_flip_swaps_the_arms_and_jitter_keeps_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 3, 8, 8)
    a = torch.arange(4 * 14, dtype=torch.float32).reshape(4, 14)
    xf, af = augment(x, a, jitter=0.0, flip_p=1.0, gen=gen)
    assert torch.equal(xf, x.flip(-1))
    assert torch.equal(af[:, :7], a[:, 7:]) and torch.equal(af[:, 7:], a[:, :7])
    xj, aj = augment(x, a, jitter=0.5, flip_p=0.0, gen=gen)
    assert torch.equal(aj, a) and not torch.allclose(xj, x)
    assert float(xj.min()) >= 0.0 and float(xj.max()) <= 1.0
    # The same jitter applies to the 3 frames of one window: the frame difference survives brightness.
    xs = torch.rand(1, 1, 3, 8, 8).repeat(1, 3, 1, 1, 1)
    xsj, _ = augment(xs, a[:1], jitter=0.5, flip_p=0.0, gen=gen)
    assert torch.allclose(xsj[:, 0], xsj[:, 2])


def test_split_is_by_episode():
    tr, va = split_by_episode(10, 0.2, seed=0)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(10))
    assert split_by_episode(10, 0.2, seed=0) == (tr, va)
    with pytest.raises(ValueError):
        split_by_episode(1, 0.2, 0)
    assert np.all(np.isin(split_by_episode(3, 0.9, 0)[1], range(3))) and len(split_by_episode(3, 0.9, 0)[0]) == 1
