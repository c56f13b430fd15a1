"""eva_core.paths: one share-path rule for config/, urdf/ and the data files configs name."""

import pytest

from eva_core.paths import config_path, share_dir, share_file, urdf_path

pytestmark = pytest.mark.unit


def test_names_resolve_under_share(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing here: everything comes from the share dir
    share = share_dir()
    assert config_path("cobot_magic") == share / "config" / "cobot_magic.yaml"
    assert config_path("cobot_magic.yaml") == share / "config" / "cobot_magic.yaml"
    assert config_path("config/sim.yaml") == share / "config" / "sim.yaml"
    assert urdf_path("cobot_magic.urdf") == share / "urdf" / "cobot_magic.urdf"


def test_a_path_as_given_wins_and_sub_paths_are_kept(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cobot_magic.yaml").write_text("local")
    assert config_path("cobot_magic") == tmp_path / "cobot_magic.yaml"
    share = tmp_path / "share"
    (share / "config" / "playback").mkdir(parents=True)
    (share / "urdf").mkdir()
    (share / "config" / "playback" / "clip.mp4").write_bytes(b"")
    monkeypatch.setenv("EVA_ROS_SHARE", str(share))
    assert share_file("config", "playback/clip.mp4") == share / "config" / "playback" / "clip.mp4"


def test_missing_names_both_places(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config file 'nope' not found \(looked at nope.yaml and .*config/nope.yaml\)"):
        config_path("nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        config_path(tmp_path / "absent.yaml")
