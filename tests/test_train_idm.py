"""eva-train-idm: learning is shown on the synthetic set; resume, export and augmentation work."""

import json

import numpy as np
import pytest
import torch

from eva_core.data import make_synthetic_dataset
from eva_core.embodiment import load_embodiment
from eva_core.idm import load_idm
from training.train_idm import augment, main, run, split_by_episode

pytestmark = pytest.mark.unit

EMB = load_embodiment()

COMMON = ["--variant", "tiny", "--threads", "1", "--no-progress", "--synthetic-size", "64"]


@pytest.mark.slow   # 50-100 s per fusion (a real training run)
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
    state = json.loads((ckpts[-1] / "state.json").read_text())
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

    src = build_idm(IDMConfig(action_dim=14, variant="tiny"))
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
    xf, af = augment(x, a, jitter=0.0, flip_p=1.0, gen=gen, mirror=EMB.mirror_permutation)
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


def test_split_keeps_an_episode_and_its_derived_copies_together():
    groups = [f"ep{i}" for i in range(10)] * 2          # ten episodes, then their VAE round trips
    tr, va = split_by_episode(20, 0.2, seed=0, groups=groups)
    assert len(va) == 4 and sorted(tr + va) == list(range(20))
    assert {groups[i] for i in tr}.isdisjoint({groups[i] for i in va})
    assert split_by_episode(10, 0.2, seed=0, groups=groups[:10]) == split_by_episode(10, 0.2, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        split_by_episode(2, 0.2, 0, groups=["a", "a"])


def _dataset(tmp_path, n=4):
    """n good synthetic episodes plus three bad files: not HDF5, a NaN action, zero frames."""
    import h5py

    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=n, frames=6, size=64, progress=False, embodiment=EMB)
    (data / "junk.hdf5").write_text("not an hdf5 file")
    with h5py.File(data / "episode_0000.hdf5") as src, h5py.File(data / "nan_action.hdf5", "w") as dst:
        for key in ("observations/images/cam_high", "observations/qpos"):
            dst.create_dataset(key, data=src[key][()])
        act = src["action"][()]
        act[2, 3] = np.nan
        dst.create_dataset("action", data=act)
    with h5py.File(data / "zero_frames.hdf5", "w") as f:
        f.create_dataset("observations/images/cam_high", data=np.zeros((0, 64, 64, 3), np.uint8))
        f.create_dataset("observations/qpos", data=np.zeros((0, 14)))
        f.create_dataset("action", data=np.zeros((0, 14)))
    return data


def test_bad_files_are_reported_by_name_and_skipped(tmp_path, capsys):
    data = _dataset(tmp_path)
    m = run(["--data", str(data), "--max-steps", "2", "--out", str(tmp_path / "run"), *COMMON])
    assert np.isfinite(m["mae"])
    cap = capsys.readouterr()
    for name, why in (("junk.hdf5", "not a readable HDF5 file"), ("nan_action.hdf5", "'/action' holds NaN"),
                      ("zero_frames.hdf5", "has no frames")):
        assert f"skipping {data / name}: " in cap.err and why in cap.err
    assert "read 4 of 7 episode files; skipped 3" in cap.out
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert sorted(saved["skipped_files"]) == sorted(str(data / n) for n in ("junk.hdf5", "nan_action.hdf5", "zero_frames.hdf5"))
    assert all(np.isfinite(v) for v in saved["per_joint_mae"].values())


def test_strict_makes_a_bad_file_fatal_in_one_line(tmp_path, capsys):
    data = _dataset(tmp_path)
    rc = main(["--data", str(data), "--max-steps", "2", "--strict", "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("eva-train-idm: ") and "(--strict)" in err[0]
    assert not (tmp_path / "run" / "idm").exists()


@pytest.mark.parametrize("make_args, needle", [
    (lambda t: ["--data", str(t / "missing")], "episode path not found"),
    (lambda t: ["--synthetic", "2", "--init", str(t / "nope.pt")], "IDM checkpoint not found"),
    (lambda t: ["--data", str(t / "data"), "--eval-only", str(t / "broken")], "not a readable safetensors file"),
    (lambda t: ["--data", str(t / "data"), "--resume", str(t / "data")], "not a resumable checkpoint"),
    (lambda t: ["--synthetic", "2", "--embodiment", str(t / "nobody.yaml")], "nobody.yaml"),
    (lambda t: ["--synthetic", "2", "--export-eva", str(t / "a_file" / "IDM.pt")], "a_file is not a directory"),
    (lambda t: ["--synthetic", "2", "--out", str(t / "a_file")], "exists and is not a directory"),
])
def test_data_and_checkpoint_errors_are_one_line_exit_2(tmp_path, capsys, make_args, needle):
    from eva_core.idm import IDMConfig, build_idm, save_idm

    make_synthetic_dataset(tmp_path / "data", episodes=2, frames=4, size=64, progress=False, embodiment=EMB)
    broken = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x01" * 10)
    (tmp_path / "a_file").write_text("x")
    argv = [*COMMON, "--max-steps", "1", "--out", str(tmp_path / "run"), *make_args(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eva-train-idm: ") and needle in err[0], err
    with pytest.raises(Exception):
        main([*argv, "--debug"])  # the traceback instead


def test_an_unwritable_output_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "run"
    assert main(["--synthetic", "4", "--out", str(out), "--export-eva", str(tmp_path / "a_file" / "IDM.pt"), *COMMON]) == 2
    assert not out.exists()  # no synthetic data, no logs: nothing ran


def test_a_config_typo_is_refused_by_name_before_any_work(tmp_path, capsys):
    """--config YAML keys, --set and the flags are one IDMTrainConfig: a typo, a wrong type or an
    out-of-range value is one line naming file and key, and --out is never created."""
    out = tmp_path / "run"
    cfg = tmp_path / "idm.yaml"
    cfg.write_text("variant: tiny\nsynthetic: 2\nbach_size: 8\n")
    assert main(["--config", str(cfg), "--out", str(out)]) == 2
    assert f"{cfg}: bach_size: unknown key; did you mean 'batch_size'?" in capsys.readouterr().err
    cfg.write_text("variant: tiny\nsynthetic: 2\nlr: fast\n")
    assert main(["--config", str(cfg), "--out", str(out)]) == 2
    assert f"{cfg}: lr: expected float" in capsys.readouterr().err
    assert main(["--synthetic", "2", "--out", str(out), "--set", "flip=-0.5"]) == 2
    assert "--set: flip: must be >= 0" in capsys.readouterr().err
    assert main(["--synthetic", "2", "--out", str(out), "--batch-size", "0"]) == 2
    assert "command line: batch_size: must be >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_config_yaml_set_and_flags_layer_in_that_order(tmp_path):
    from training.train_idm import parse_args

    cfg = tmp_path / "idm.yaml"
    cfg.write_text("variant: tiny\nbatch_size: 8\nlr: 1e-4\nout: runs/a\n")
    a = parse_args(["--config", str(cfg), "--set", "lr=2e-4", "--set", "seed=3", "--seed", "4"])
    assert (a.variant, a.batch_size, a.lr, a.seed, a.out, a.epochs) == ("tiny", 8, 2e-4, 4, "runs/a", 20)


def test_resume_auto_refuses_step_directories_it_cannot_resume(tmp_path):
    """A run whose checkpoints no longer parse (an older layout) is not restarted over."""
    from training.common import latest_checkpoint

    assert latest_checkpoint(tmp_path) is None
    old = tmp_path / "checkpoints" / "step_00000010"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text('{"step": 10}')
    with pytest.raises(ValueError, match="step_00000010: not a resumable checkpoint"):
        latest_checkpoint(tmp_path)
    (old / "state.json").write_text('{"step": 10}')
    assert latest_checkpoint(tmp_path) == old


def test_a_finished_run_is_refused_without_resume_or_overwrite_and_overwrite_swaps_it(tmp_path, capsys):
    """Finding 1 (issue 23): --out into a finished run used to exit 0 and replace idm/, eval.json,
    loss.png and tb/ beside the old checkpoints."""
    out = tmp_path / "run"
    args = ["--synthetic", "3", "--synthetic-frames", "6", "--out", str(out), *COMMON]
    run([*args, "--max-steps", "3"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*args, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--resume" in err[0] and "--overwrite" in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    # --overwrite: a failing new run leaves the old one as it was
    assert main([*args, "--max-steps", "2", "--overwrite", "--init", str(tmp_path / "nope.pt")]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    run([*args, "--max-steps", "2", "--overwrite", "--save-every", "1", "--keep", "5"])
    assert json.loads((out / "eval.json").read_text())["step"] == 2
    assert sorted(c.name for c in (out / "checkpoints").glob("step_*")) == ["step_00000001", "step_00000002"]
    assert not list(tmp_path.glob(".run*"))


def test_a_bad_init_is_refused_before_anything_is_written(tmp_path, capsys):
    """Finding 8: the synthetic data used to be written into --out before --init was refused."""
    from eva_core.idm import IDMConfig, build_idm, save_idm

    bad = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\x01" * 10)
    out = tmp_path / "run"
    assert main(["--init", str(bad), "--synthetic", "2", "--max-steps", "1", "--out", str(out), *COMMON]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert not out.exists()


def test_a_killed_and_resumed_run_matches_the_uninterrupted_one(tmp_path):
    """Exact resume: the run killed after step 6 (its newest checkpoint at 3) and resumed ends with
    the uninterrupted run's weights, bit for bit (seeded epoch order, skipped batches, per-step
    augmentation and dropout seeds)."""
    import shutil

    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["--synthetic", "3", "--synthetic-frames", "10", "--batch-size", "4", "--max-steps", "6",
            "--save-every", "3", "--keep", "2", "--eval-every", "100", "--flip", "0.5", "--color-jitter", "0.2",
            *COMMON]
    run([*args, "--out", str(full)])
    shutil.copytree(full, killed)
    shutil.rmtree(killed / "checkpoints" / "step_00000006")
    for name in ("idm", "eval.json"):
        shutil.rmtree(killed / name) if (killed / name).is_dir() else (killed / name).unlink()
    run([*args, "--out", str(killed), "--resume", "auto"])
    a, b = load_idm(full / "idm").state_dict(), load_idm(killed / "idm").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "eval.json").read_text())["mae"] == json.loads((full / "eval.json").read_text())["mae"]


def _with_impossible_value(data, name, key, value=1e9):
    """A copy of episode 0 with one finite impossible value in `key` (frame 3, dim 1)."""
    import h5py

    with h5py.File(data / "episode_0000.hdf5") as src, h5py.File(data / name, "w") as dst:
        for k in ("observations/images/cam_high", "observations/qpos", "action"):
            arr = src[k][()]
            if k.endswith(key):
                arr[3, 1] = value
            dst.create_dataset(k, data=arr)


def test_episodes_outside_the_embodiments_limits_are_skipped_by_name(tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=3, frames=6, size=64, progress=False, embodiment=EMB)
    _with_impossible_value(data, "bad_qpos.hdf5", "qpos")
    _with_impossible_value(data, "bad_action.hdf5", "action", -1e9)
    m = run(["--data", str(data), "--max-steps", "2", "--out", str(tmp_path / "run"), *COMMON])
    cap = capsys.readouterr()
    for name, key, value in (("bad_qpos.hdf5", "qpos", "1e+09"), ("bad_action.hdf5", "action", "-1e+09")):
        line = next(x for x in cap.err.splitlines() if name in x)
        assert line.startswith(f"eva-train-idm: skipping {data / name}: '{key}' frame 3, left_joint2 = {value} "
                               "lies outside the limits"), line
    assert "read 3 of 5 episode files; skipped 2" in cap.out
    assert np.isfinite(m["mae"]) and m["mae"] < 10   # the normalisation did not see 1e9
    rc = main(["--data", str(data), "--max-steps", "2", "--strict", "--out", str(tmp_path / "strict"), *COMMON])
    assert rc == 2 and "outside the limits" in capsys.readouterr().err


def test_a_run_where_every_episode_is_outside_the_limits_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=1, frames=6, size=64, progress=False, embodiment=EMB)
    for i in range(3):
        _with_impossible_value(data, f"bad_{i}.hdf5", "qpos")
    (data / "episode_0000.hdf5").unlink()
    rc = main(["--data", str(data), "--max-steps", "2", "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err
    assert rc == 2 and "need at least 2 readable episodes" in err and "skipped 3" in err
