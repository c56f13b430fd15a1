"""eva_core.images: colour order, float->uint8, the image check at read, ImageNet normalisation."""

import cv2
import numpy as np
import pytest
import torch

from eva_core.images import check_image, decode_jpeg, encode_jpeg, normalize_imagenet, to_uint8

pytestmark = pytest.mark.unit


def _red(h=16, w=24):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 255  # R in RGB
    return img


def test_jpeg_holds_true_colours_and_decodes_to_rgb():
    data = encode_jpeg(_red())
    # an independent decoder (OpenCV, BGR) sees red in its last channel: the file is a standard JPEG
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[..., 2].mean() > 240 and bgr[..., 0].mean() < 15
    rgb = decode_jpeg(data)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 24, 3)
    assert rgb[..., 0].mean() > 240 and rgb[..., 2].mean() < 15
    np.testing.assert_array_equal(decode_jpeg(data, order="bgr"), bgr)


def test_decode_accepts_padded_rows_and_rejects_garbage():
    data = encode_jpeg(_red())
    row = np.zeros(len(data) + 37, np.uint8)
    row[: len(data)] = np.frombuffer(data, np.uint8)
    np.testing.assert_array_equal(decode_jpeg(row), decode_jpeg(np.bytes_(data)))
    for bad in (b"", b"not a jpeg", np.zeros(10, np.uint8)):
        with pytest.raises(ValueError, match="not a decodable"):
            decode_jpeg(bad)
    with pytest.raises(ValueError, match="colour order"):
        decode_jpeg(data, order="rbg")


def test_to_uint8_rounds_and_clips():
    x = np.array([0.0, 0.6 / 255, 0.499, 0.5, 1.0, 1.7, -0.2, np.nan])
    np.testing.assert_array_equal(to_uint8(x), [0, 1, 127, 128, 255, 255, 0, 0])  # 0.499*255=127.2
    t = to_uint8(torch.tensor([0.999, 0.002]))
    assert t.dtype == torch.uint8 and t.tolist() == [255, 1]  # truncation would give 254, 0
    u = np.arange(3, dtype=np.uint8)
    assert to_uint8(u) is u


def test_check_image_accepts_uint8_and_unit_floats():
    f = np.full((2, 4, 5, 3), 0.5, np.float32)
    out = check_image(f, "ep.hdf5: cam_high")
    assert out.dtype == np.uint8 and np.all(out == 128)  # not the all-zero astype(uint8) cast
    u = np.zeros((4, 5, 3), np.uint8)
    assert check_image(u, "x") is u


@pytest.mark.parametrize("arr, needle", [
    (np.full((2, 4, 5, 3), 1000, np.uint16), "dtype uint16"),
    (np.full((2, 4, 5, 3), 200.0, np.float32), r"span \[200, 200\]; expected \[0, 1\]"),
    (np.full((4, 5, 3), np.nan, np.float32), "NaN or inf"),
    (np.zeros((4, 5), np.uint8), r"shape \(4, 5\)"),
    (np.zeros((4, 5, 4), np.uint8), r"shape \(4, 5, 4\)"),
    (np.zeros((2, 0, 5, 3), np.uint8), "empty image"),
    (np.zeros((4, 5, 3), bool), "dtype bool"),
])
def test_check_image_refuses_with_the_source_named(arr, needle):
    with pytest.raises(ValueError, match=needle) as e:
        check_image(arr, "ep.hdf5: /observations/images/cam_high")
    assert str(e.value).startswith("ep.hdf5: /observations/images/cam_high: ")


def test_normalize_imagenet_matches_torchvision():
    from torchvision.transforms import Normalize

    x = torch.rand(2, 5, 3, 8, 8)
    ref = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x.reshape(10, 3, 8, 8)).reshape(x.shape)
    torch.testing.assert_close(normalize_imagenet(x), ref)
    with pytest.raises(ValueError, match="expected"):
        normalize_imagenet(torch.rand(2, 9, 8, 8))


def test_frame_gate_checks_bytes_and_resolution_and_rate_limits_its_reports():
    from eva_core.images import FrameGate

    gate = FrameGate(max_bytes=1 << 20)   # 0x0: the first accepted frame's size
    assert gate.check_bytes(4096, 4096, 3, 4096 * 4096 * 3) == "4096x4096 frame of 50331648 bytes exceeds max_frame_bytes 1048576"
    assert "exceeds" in gate.check_bytes(4, 4, 3, 48 << 20)          # the header lies; the data is 48 MB
    assert gate.check_size(1, 1) == "" and gate.check_bytes(64, 48, 3, 64 * 48 * 3) == ""
    gate.accept(64, 48)
    assert gate.check_size(64, 48) == ""
    assert gate.check_size(1, 1) == "1x1 frame, the camera's frames are 64x48"
    assert gate.check_size(1, 20000) == "1x20000 frame, the camera's frames are 64x48"
    gate.accept(1, 1)                                                  # held: the first size stays
    assert gate.check_size(1, 1) and gate.rejected == 5
    fixed = FrameGate(640, 480)
    assert fixed.check_size(64, 48) == "64x48 frame, the camera's frames are 640x480"
    lines = [fixed.report("/cam: x", t) for t in (0.0, 0.1, 0.5, 1.2, 1.3)]
    assert lines == ["/cam: x; frame dropped", "", "", "/cam: x; frame dropped (2 more since the last report)", ""]
    assert fixed.report("/cam: y", 1.3) == "/cam: y; frame dropped"   # each reason on its own
    with pytest.raises(ValueError, match="frame gate"):
        FrameGate(640, 0)
