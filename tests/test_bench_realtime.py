"""bench/realtime.py's configurations and 14B projection (the toy rows run in the bench itself)."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def bench():
    spec = importlib.util.spec_from_file_location("bench_realtime", ROOT / "bench" / "realtime.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_name_the_teacher_naive_baselines_at_equal_calls_and_present_students(tmp_path):
    b = bench()
    (tmp_path / "k2" / "final").mkdir(parents=True)
    (tmp_path / "k2" / "final" / "world_model.yaml").write_text("world_model: {}\n")
    rows = dict(b.configs(str(tmp_path / "k{K}"), [1, 2]))
    assert rows["teacher_eva"] == {"scheduler": "unipc", "num_steps": 40, "hist_guidance": 1.5, "lang_guidance": 2.5}
    assert rows["teacher_deployed"]["num_steps"] == 8
    assert rows["naive_k1"]["num_steps"] == 1 and rows["naive_k2"]["num_steps"] == 2
    assert rows["naive_k2"]["hist_guidance"] == rows["naive_k2"]["lang_guidance"] == 0.0   # one branch: K calls
    assert rows["student_k2"] == tmp_path / "k2" / "final" / "world_model.yaml" and "student_k1" not in rows


def test_the_14b_projection_reproduces_evas_seconds_per_chunk():
    b = bench()
    rows = [{"config": "teacher_eva", "calls": 120}, {"config": "student_k2", "calls": 2},
            {"config": "teacher_eva_reseed", "calls": 120}]
    proj = {r["config"]: r for r in b.projection(rows, mfu=0.4, vae_eff=0.1)}
    assert "teacher_eva_reseed" not in proj
    assert 160 < proj["teacher_eva"]["total_s"] < 190          # FACTS §12: about 170 s per chunk on one H100
    assert proj["teacher_eva"]["rtf"] == pytest.approx(49 / 16 / proj["teacher_eva"]["total_s"])
    assert proj["student_k2"]["denoise_s"] == pytest.approx(2 * proj["student_k2"]["s_per_call"])
    assert proj["student_k2"]["rtf"] > 30 * proj["teacher_eva"]["rtf"]
