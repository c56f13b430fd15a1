"""bag -> LeRobot v3.0 -> episodes equals bag -> HDF5 -> episodes, and eva-train-idm trains on a
LeRobot root as on its HDF5 copy."""

import json

import numpy as np
import pytest

from eva_core.data import load_episodes, make_synthetic_dataset
from eva_core.data.convert_episodes import main as convert_main
from eva_core.data.lerobot_read import check_dataset
from eva_core.data.lerobot_write import psnr
from eva_core.data.rosbag_episodes import main as bag_main
from eva_core.embodiment import load_embodiment
from test_bag_episodes import record

pytestmark = pytest.mark.unit

EMB = load_embodiment()


def test_bag_to_lerobot_equals_bag_to_hdf5(tmp_path, capsys):
    record(tmp_path / "bags/ep_a", size=(48, 64))
    record(tmp_path / "bags/ep_b", seconds=1.0, size=(48, 64), instruction="push the block")
    bags = [str(tmp_path / "bags/ep_a"), str(tmp_path / "bags/ep_b")]
    assert bag_main([*bags, "--out", str(tmp_path / "h5")]) == 0
    assert bag_main([*bags, "--out", str(tmp_path / "lr"), "--format", "lerobot"]) == 0
    assert check_dataset(tmp_path / "lr") == []
    h5 = list(load_episodes(tmp_path / "h5"))
    lr = list(load_episodes(tmp_path / "lr"))
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["fps"] == 20 and info["total_episodes"] == 2 and info["total_tasks"] == 2
    assert len(h5) == len(lr) == 2
    for a, b in zip(h5, lr):
        assert len(a) == len(b) and a.instruction == b.instruction and b.fps == round(a.fps)
        np.testing.assert_array_equal(b.qpos, a.qpos.astype(np.float32))       # exact at float32
        np.testing.assert_array_equal(b.action, a.action.astype(np.float32))
        np.testing.assert_array_equal(b.meta["timestamps"], (np.arange(len(a)) / round(a.fps)).astype(np.float32))
        # the codec's error: these frames are a worst case for 4:2:0 chroma (flat saturated colours and
        # a one-pixel pure-blue line), so ~25 dB; twin camera frames give 39-54 dB (docs/twin_and_data.md)
        p = psnr(a.frames, b.frames)
        print(f"{b.source}: PSNR {p:.1f} dB over {len(b)} frames")
        assert p > 20, f"{b.source}: PSNR {p:.1f} dB"
        # and every decoded frame is its own frame, not a neighbour (no off-by-one in from/to timestamps)
        err = lambda x, y: float(np.mean((x.astype(float) - y.astype(float)) ** 2))  # noqa: E731
        for i in range(len(b)):
            own = err(b.frames[i], a.frames[i])
            assert all(own < err(b.frames[i], a.frames[j]) for j in (i - 1, i + 1) if 0 <= j < len(a)), i
    # an existing dataset is refused, --append adds the bag's episode to it
    assert bag_main([bags[0], "--out", str(tmp_path / "lr"), "--format", "lerobot"]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert bag_main([bags[0], "--out", str(tmp_path / "lr"), "--format", "lerobot", "--append"]) == 0
    again = list(load_episodes(tmp_path / "lr"))
    assert len(again) == 3
    np.testing.assert_array_equal(again[2].qpos, lr[0].qpos)
    assert check_dataset(tmp_path / "lr") == []


@pytest.mark.slow   # two short training runs
def test_train_idm_on_a_lerobot_root_matches_its_hdf5_copy(tmp_path):
    from training.train_idm import run

    make_synthetic_dataset(tmp_path / "h5", episodes=6, frames=8, size=64, progress=False, embodiment=EMB)
    assert convert_main([str(tmp_path / "h5"), "--to", "lerobot", str(tmp_path / "lr"), "--no-progress"]) == 0
    common = ["--variant", "tiny", "--threads", "1", "--no-progress", "--max-steps", "30", "--eval-every", "30",
              "--seed", "3"]
    m_h5 = run(["--data", str(tmp_path / "h5"), "--out", str(tmp_path / "run_h5"), *common])
    m_lr = run(["--data", str(tmp_path / "lr"), "--out", str(tmp_path / "run_lr"), *common])
    rel = abs(m_lr["mae"] - m_h5["mae"]) / m_h5["mae"]
    print(f"val MAE: HDF5 {m_h5['mae']:.5f}, LeRobot {m_lr['mae']:.5f} ({100 * rel:.2f} % apart)")
    assert rel < 0.10, (m_h5["mae"], m_lr["mae"])
    assert json.loads((tmp_path / "run_lr/eval.json").read_text())["val_episodes"] >= 1
