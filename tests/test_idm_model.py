"""IDM network: EVA key layout, spatial softmax, window clamping, early/late fusion, batched predict."""

from pathlib import Path

import pytest
import torch
import torchvision

from eva_core.idm import IDM, IDMConfig, SpatialSoftmax, build_idm, native_bf16, resolve_precision
from eva_core.images import normalize_imagenet

pytestmark = pytest.mark.unit

torch.set_num_threads(1)


def test_spatial_softmax_peak_gives_its_grid_position_x_over_h_then_y():
    ss = SpatialSoftmax()
    with torch.no_grad():
        ss.temperature.fill_(0.01)  # sharp
    f = torch.zeros(1, 2, 5, 7)
    f[0, 0, 4, 0] = 10.0  # last row (h), first column (w)
    f[0, 1, 0, 6] = 10.0  # first row, last column
    out = ss(f)
    assert out.shape == (1, 4)
    x, y = out[0, :2], out[0, 2:]  # all x (over H) first, then all y (over W)
    assert torch.allclose(x, torch.tensor([1.0, -1.0]), atol=1e-3)
    assert torch.allclose(y, torch.tensor([-1.0, 1.0]), atol=1e-3)


def test_spatial_softmax_temperature_is_learnable_and_matters():
    ss = SpatialSoftmax()
    f = torch.randn(2, 3, 4, 4)
    a = ss(f)
    with torch.no_grad():
        ss.temperature.fill_(5.0)
    b = ss(f)
    assert not torch.allclose(a, b)
    assert ss.temperature.requires_grad
    ss(f).sum().backward()
    assert ss.temperature.grad is not None and ss.temperature.grad.abs() > 0


def test_resnet_plus_has_exactly_the_eva_key_layout():
    m = build_idm(IDMConfig(action_dim=14, variant="resnet_plus"))
    sd = m.state_dict()
    head = {k for k in sd if not k.startswith("backbone.")}
    expected_head = {"spatial_softmax.temperature"} | {f"mlp_head.{i}.{p}" for i in (0, 1, 4, 6) for p in ("weight", "bias")}
    assert head == expected_head
    ref = torchvision.models.resnet50(weights=None).state_dict()
    assert {k[len("backbone."):] for k in sd if k.startswith("backbone.")} == set(ref)  # incl. unused fc
    assert sd["backbone.conv1.weight"].shape == (64, 9, 7, 7)
    assert sd["mlp_head.0.weight"].shape == (1024, 4096)  # 2 * 2048 keypoint coordinates
    assert sd["mlp_head.1.weight"].shape == (1024,)  # LayerNorm
    assert sd["mlp_head.4.weight"].shape == (512, 1024)
    assert sd["mlp_head.6.weight"].shape == (14, 512)
    assert m.config.image_size == 512
    assert not any(k in sd for k in ("action_mean", "action_std", "train_mean"))  # stats live outside


def test_variants_defaults():
    assert IDMConfig(action_dim=14, variant="resnet18").image_size < 512
    tiny = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    assert tiny.config.image_size == 64
    assert isinstance(tiny.spatial_softmax, SpatialSoftmax)
    with pytest.raises(ValueError, match="variant"):
        IDMConfig(action_dim=14, variant="vit")
    assert IDMConfig(action_dim=14, variant="resnet_plus").fusion == "early"  # EVA's layout
    with pytest.raises(ValueError, match="fusion"):
        IDMConfig(action_dim=14, variant="tiny", fusion="middle")
    # Config files written before `fusion` existed held early-fusion models.
    assert IDMConfig.from_dict({"variant": "resnet18", "action_dim": 14}).fusion == "early"


def test_window_indices_are_clamped_at_the_ends():
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    assert m.window_indices(3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert m.window_indices(1).tolist() == [[0, 0, 0]]


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_predict_batched_equals_per_frame_loop_and_any_batch_size(fusion):
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny", fusion=fusion))
    m.set_normalization(torch.linspace(-1, 1, 14), torch.linspace(0.5, 2, 14))
    video = torch.rand(9, 3, 40, 56)  # any H, W: resized inside
    a = m.predict(video, batch_size=4)
    b = m.predict(video, batch_size=1)
    c = m.predict_per_frame(video)
    assert a.shape == (9, 14) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, c, atol=1e-5)
    assert torch.allclose(a, m.predict(video, batch_size=0), atol=1e-5)  # a batch size below 1 means 1


def test_predict_denormalises_with_the_stored_stats():
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    video = torch.rand(4, 3, 64, 64)
    raw = m.predict(video)
    m.set_normalization(torch.full((14,), 3.0), torch.full((14,), 2.0))
    assert torch.allclose(m.predict(video), raw * 2.0 + 3.0, atol=1e-5)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_predict_window_uses_the_neighbour_frames(fusion):
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny", fusion=fusion))
    video = torch.rand(5, 3, 64, 64)
    base = m.predict(video)
    changed = video.clone()
    changed[4] = torch.rand(3, 64, 64)  # only windows of t=3 and t=4 see frame 4
    out = m.predict(changed)
    assert torch.allclose(out[:3], base[:3], atol=1e-6)
    assert not torch.allclose(out[3], base[3])


def test_predict_rejects_bad_shapes_and_keeps_train_mode():
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    m.train()
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        m.predict(torch.rand(4, 64, 64, 3))
    m.predict(torch.rand(2, 3, 64, 64))
    assert m.training


def test_local_backbone_weights_and_eva_conv1_init(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    late = IDM(IDMConfig(action_dim=14, variant="resnet18", backbone_weights=str(path)))  # the light default: late fusion
    assert late.config.fusion == "late"
    assert torch.equal(late.backbone.conv1.weight, ref.conv1.weight)  # one frame in: ImageNet conv1 as is
    m = IDM(IDMConfig(action_dim=14, variant="resnet18", fusion="early", backbone_weights=str(path)))
    w = m.backbone.conv1.weight
    assert w.shape == (64, 9, 7, 7)
    assert torch.allclose(w, ref.conv1.weight.repeat(1, 3, 1, 1) / 3)
    assert torch.equal(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        IDM(IDMConfig(action_dim=14, variant="resnet18", backbone_weights=str(tmp_path / "bad.pth")))


def test_late_fusion_encodes_each_frame_once_and_orders_the_window():
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny", fusion="late"))
    assert m.backbone[0].in_channels == 3 and m.mlp_head[0].in_features == 3 * 2 * 64
    calls = []
    m.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    video = torch.rand(7, 3, 64, 64)
    m.predict(video, batch_size=4)
    assert sum(calls) == 7  # T encoder passes, not 3T
    calls.clear()
    m.predict_per_frame(video)
    assert sum(calls) == 21  # EVA's loop re-encodes every neighbour
    # Swapping the outer frames of a window changes the action: the head sees the order.
    frames = torch.rand(3, 3, 64, 64)
    x = normalize_imagenet(frames)
    with torch.no_grad():
        a = m(x.unsqueeze(0))
        b = m(x[[2, 1, 0]].unsqueeze(0))
    assert not torch.allclose(a, b)
    with pytest.raises(RuntimeError, match="late-fusion"):
        build_idm(IDMConfig(action_dim=14, variant="tiny")).encode(x)


def test_bfloat16_predict_is_close_to_float32_and_checked():
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny", fusion="late"))
    m.set_normalization(torch.zeros(14), torch.full((14,), 0.5))
    video = torch.rand(6, 3, 64, 64)
    ref = m.predict(video)
    low = m.predict(video, precision="bfloat16")
    assert low.dtype == torch.float32
    err = (low - ref).abs().max().item()
    assert 0 < err < 0.05  # it did run in bf16, and stayed close
    with pytest.raises(ValueError, match="precision"):
        m.predict(video, precision="float16")
    auto = m.predict(video, precision="auto")  # bf16 exactly where the CPU has it natively
    assert torch.equal(auto, low if native_bf16("cpu") else ref)
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native_bf16("cpu") else "float32")


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_a_batch_of_clips_equals_clip_by_clip(fusion):
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny", fusion=fusion))
    m.set_normalization(torch.linspace(-1, 1, 14), torch.linspace(0.5, 2, 14))
    clips = torch.rand(3, 5, 3, 48, 48)
    out = m.predict(clips, batch_size=4)
    assert out.shape == (3, 5, 14)
    for b in range(3):  # windows are clamped inside each clip, never borrowing a neighbour clip's frame
        assert torch.allclose(out[b], m.predict(clips[b]), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        m.predict(torch.rand(2, 5, 48, 48, 3))


def test_action_dim_comes_from_the_embodiment_not_a_default():
    from eva_core.embodiment import load_embodiment

    with pytest.raises(ValueError, match="action_dim: must be a positive int"):
        IDMConfig(variant="tiny")
    single = load_embodiment(Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml")
    m = build_idm(IDMConfig.for_embodiment(single, variant="tiny"))
    assert m.predict(torch.rand(5, 3, 64, 64)).shape == (5, 7)
    with pytest.raises(TypeError, match="IDMConfig"):
        build_idm(None)


@pytest.mark.parametrize("kw, key, problem", [
    (dict(hidden=[1, 2, 3]), "hidden", "2 widths"),
    (dict(image_size=16), "image_size", ">= 32"),
    (dict(dropout=1.0), "dropout", "< 1"),
    (dict(frame_offsets=[]), "frame_offsets", "at least one"),
    (dict(frame_offsets=[0.5]), "frame_offsets", "expected int"),
    (dict(action_dim=0), "action_dim", ">= 1"),
])
def test_idm_config_is_a_typed_section(kw, key, problem):
    from eva_core.config import ConfigError

    with pytest.raises(ConfigError) as e:
        IDMConfig(**{"action_dim": 14, "variant": "tiny", **kw})
    assert e.value.key == key and problem in e.value.problem
    cfg = IDMConfig(action_dim=14, variant="tiny", hidden=[32, 16])
    assert cfg.hidden == (32, 16) and cfg.fusion == "early" and cfg.image_size == 64
    assert IDMConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["hidden"] == [32, 16]
