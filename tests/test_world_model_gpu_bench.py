"""bench/world_model_gpu.py: the 14B GPU benchmark's code path, run on CPU with its --smoke config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "world_model_gpu.py"


def _run(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_smoke_json_has_the_table(tmp_path):
    out = tmp_path / "gpu.json"
    r = _run(["--smoke", "--repeats", "1", "--warmup", "1", "--decode-repeats", "1", "--fp8", "--json", str(out)],
             tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    s = data["setup"]
    assert s["latent"] == [3, 4, 4] and s["text_tokens"] == 512 and s["image_tokens"] == 257
    assert s["motion_s"] == pytest.approx(9 / 16)
    assert s["flops_per_call"] > 0
    assert data["decode"]["decode_s"] > 0
    rows = data["rows"]
    assert [(row["sampler"], row["calls"]) for row in rows] == [
        ("eva_40x3", 120), ("student_k4", 4), ("student_k2", 2), ("student_k1", 1)]
    for row in rows:
        assert row["config"] == "fp32"
        assert row["s_per_call"] > 0
        assert row["s_per_chunk"] == pytest.approx(row["calls"] * row["s_per_call"] + row["decode_s"])
        assert row["rtf"] == pytest.approx(s["motion_s"] / row["s_per_chunk"])
    assert [row["rtf"] for row in rows] == sorted(row["rtf"] for row in rows)  # fewer calls, higher RTF
    # --fp8 is a row or a one-line skip (torchao missing / CPU), never a crash
    fp8 = [c for c in data["configs"] if c["config"] == "fp32+fp8"]
    assert len(fp8) == 1 and ("skipped" in fp8[0] or "s_per_call" in fp8[0])
    header = next(line for line in r.stdout.splitlines() if line.startswith("config"))
    assert header.split() == ["config", "sampler", "s/call", "calls", "s/chunk", "RTF", "peak", "GB"]


def test_without_cuda_one_line_and_exit_2(tmp_path):
    r = _run([], tmp_path)
    assert r.returncode == 2
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]
