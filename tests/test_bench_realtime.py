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


def test_with_a_light_decoder_every_row_has_its_light_twin_and_names_its_decoder(tmp_path):
    b = bench()
    light = tmp_path / "ld"
    names = [n for n, _ in b.configs(str(tmp_path / "none_k{K}"), [2], light=light, demo=tmp_path)]
    assert names == ["teacher_eva", "teacher_eva_light", "teacher_cached", "teacher_cached_taylor",
                     "teacher_deployed", "teacher_deployed_light", "naive_k2", "naive_k2_light"]
    assert b.decoder_overrides("naive_k2_light", light) == {"decoder": "light", "light_decoder": str(light.resolve())}
    assert b.decoder_overrides("student_k2", light) == {"decoder": "vae", "light_decoder": None}


def test_the_committed_student_is_the_student_row_and_the_deployed_configuration(tmp_path):
    b = bench()
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "world_model_student.yaml").write_text(
        "world_model: {sampler: student, student_steps: 2, decoder: light, light_decoder: light_decoder}\n")
    rows = dict(b.configs(str(tmp_path / "none_k{K}"), [1, 2], demo=demo))
    assert rows["student_k2"] == demo / "world_model_student.yaml" and "student_k1" not in rows
    assert b.deployed_student(demo) == (demo / "world_model_student.yaml", 2, True)
    rows = [{"config": "teacher_eva", "rtf": 2.0}, {"config": "student_k2_light", "rtf": 25.0}]
    assert b.speedup(rows, "student_k2_light") == pytest.approx(12.5)
    assert b.speedup(rows, "student_k4") is None


def test_the_committed_export_deploys_the_light_student():
    b = bench()
    path, k, light = b.deployed_student()
    assert path.name == "world_model_student.yaml" and k == 2 and light
    assert b.deployed_name(ROOT / "checkpoints" / "demo" / "light_decoder") == "student_k2_light"
    assert b.deployed_name(None) == "student_k2"


def test_the_cached_teachers_sample_as_eva_with_a_diffusers_cache_and_project_by_their_denoise_time():
    b = bench()
    rows = dict(b.configs("none_k{K}", [2]))
    for name, kind in (("teacher_cached", "first_block"), ("teacher_cached_taylor", "taylor_seer")):
        assert {k: rows[name][k] for k in rows["teacher_eva"]} == rows["teacher_eva"]
        assert rows[name]["cache"]["kind"] == kind
    proj = {r["config"]: r for r in b.projection(
        [{"config": "teacher_eva", "calls": 120, "denoise_s": 1.0},
         {"config": "teacher_cached", "calls": 120, "denoise_s": 0.6}], mfu=0.4, vae_eff=0.1)}
    assert proj["teacher_cached"]["calls"] == pytest.approx(72)
    assert proj["teacher_cached"]["total_s"] < proj["teacher_eva"]["total_s"]


def test_a_cached_teacher_builds_and_samples_a_chunk():
    """The rows' cache configs are valid world-model configs: the committed teacher with each cache."""
    b = bench()
    for name in b.CACHED:
        wm = b.load(b.CACHED[name])
        video = wm.generate(__import__("numpy").zeros((wm.height, wm.width, 3), "uint8"), "pick", seed=0)
        assert video.shape[0] == wm.num_frames and wm.cfg.cache.kind != "none"
