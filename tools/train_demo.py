"""train-demo: the whole EVA method at toy scale on this CPU, from nothing, seeded (`make train-demo`).

    python tools/train_demo.py [--config config/training/demo.yaml] [--out runs/train_demo]
                               [--export checkpoints/demo] [--overwrite] [--no-export]
    python tools/train_demo.py --export-from RUN [--export checkpoints/demo]   (a finished --no-export run)
    python tools/train_demo.py --add-student DISTILL_RUN [--export checkpoints/demo]
                               (an eva-train-distill run of the export's world_model_grpo.yaml -> its student)

Stages (each one timed and printed):
  demos     scripted IK demos in the twin, executed through the ROS graph (twin camera + controller
            on the sim arm) and recorded by eva-record (rosbag2 MCAP), one graph per task and seed
  episodes  eva-bag-to-episodes: the bags -> episode HDF5 (frames, measured joints, commands)
  heldout demos  the same, on the held-out replay seeds: idm_replay's ground truth, GRPO's held-out
            prompts, the VAE's held-out frames
  sft       eva-train-sft: fits the tiny AutoencoderKLWan to the twin frames first, then diffusion
            forcing on the tiny Wan2.1 I2V transformer (full fine-tune of the random tiny model)
  vae       reconstruction error of the fitted VAE (and of the random one) on held-out twin frames
  vae round trip  (idm.vae_augment) the episodes' frames through the fitted VAE, as the planner's
            decoded frames are (eva_core/world_model/vae_roundtrip.py)
  idm       eva-train-idm on the episodes (and their VAE round trips); without vae_augment it runs
            before sft
  grpo      eva-train-grpo: Flow-GRPO LoRA on the SFT model, reward = the trained IDM's executability
  distil    eva-train-distill (DMD2) of the GRPO world model (the teacher) into a K-step student
            (distill.dmd.student_steps transformer calls per chunk, no guidance branches)
  light decoder  (if the config has a light_decoder section) training/train_light_decoder.py: a light
            decoder for the student's VAE, on the chunks the student generates from the twin's reset frames,
            with the IDM-consistency loss of the trained IDM; the student is then exported with decoder: light
  evaluate  idm_replay_success per task (held-out seeds), held-out reward of SFT vs GRPO
            (eva-train-grpo --eval-only, same seeds and noise)
  export    IDM, VAE, transformer, LoRA and the student into --export with manifest.json (sha256 of
            every file, the command, the seeds, the metrics, the stage times, how the student was
            made); world_model_{sft,grpo,student}.yaml; refuses > max_export_mb
The closed loop (the student deployed; GRPO, SFT, best-of-N compared) is `eva-demo` on the exported checkpoints.
Outputs in --out (refused if it exists, unless --overwrite); --export is replaced only when complete.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import MISSING, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from eva_core import yaml_io  # noqa: E402
from eva_core.config import ConfigError, Section, param  # noqa: E402


# ---- config ------------------------------------------------------------------------------------------
@dataclass
class CameraSection(Section):
    height: int = param(48, "twin camera image height (= the world model's)", unit="px", ge=1)
    width: int = param(64, "twin camera image width (= the world model's)", unit="px", ge=1)
    fps: float = param(10.0, "twin camera frame rate", unit="Hz", gt=0)


@dataclass(kw_only=True)
class PipelineSection(Section):
    seed: int = param(0, "seed of every stage")
    tasks: list[str] = param(MISSING, "twin tasks (eva_core.sim.registry.TASKS)")
    demo_time_scale: float = param(1.0, ">1 slows the scripted plans (the arm lags on a loaded CPU); a failed "
                                   "demo is retried once x1.5 slower", gt=0)
    demo_seeds: list[int] = param(MISSING, "scripted demos per task, through the ROS graph")
    camera: CameraSection = param(CameraSection, "what the twin camera renders")
    replay_seeds: list[int] = param(MISSING, "held-out seeds for idm_replay_success")
    max_export_mb: float = param(20.0, "refuse an export over this size", unit="MB", gt=0)

    def validate(self):
        from eva_core.sim.registry import unknown_task

        for task in self.tasks:
            if unknown_task(task):
                self.error("tasks", unknown_task(task))
        if not self.tasks or not self.demo_seeds or not self.replay_seeds:
            self.error("tasks" if not self.tasks else "demo_seeds" if not self.demo_seeds else "replay_seeds",
                       "must not be empty")


def _idm_section():
    from training.train_idm import IDMTrainConfig

    @dataclass
    class IDMSection(IDMTrainConfig):
        """eva-train-idm's keys (the pipeline sets data, seed, out, cpu, threads, no_progress)."""

        vae_augment: bool = param(False, "also train on the episodes' VAE round trips (the IDM stage runs after sft)")

    return IDMSection


def check_config(cfg: dict, source: str) -> None:
    """Every section of a train-demo config, at every depth, before any work: the pipeline, the
    model (WorldModelConfig), the IDM (eva-train-idm's config) and the SFT and GRPO configs as the
    stages will write them. A typo, wrong type or bad value is one ConfigError line."""
    from training.common import world_model_config
    from training.grpo import GRPOConfig
    from training.sft import SFTConfig

    known = ("pipeline", "model", "idm", "sft", "grpo", "distill", "light_decoder")
    for key in cfg:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(source, "", str(key), "unknown key; " + (f"did you mean {near[0]!r}?" if near else
                                                                       f"valid keys: {', '.join(known)}"))
    for key in known:
        if key == "light_decoder" and key not in cfg:   # optional: no light decoder stage
            continue
        if not isinstance(cfg.get(key), dict):
            raise ConfigError(source, key, "", "missing section (a mapping)")
    PipelineSection.from_dict(cfg["pipeline"], source=source, section="pipeline")
    world_model_config(cfg["model"], source, "model")
    _idm_section().from_dict(cfg["idm"], source=source, section="idm")
    stand_in = "<filled in by the pipeline>"
    for name, cls in (("sft", SFTConfig), ("grpo", GRPOConfig)):
        section = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg[name].items()}
        for filled in ("model", "reward"):
            if filled in section:
                raise ConfigError(source, name, filled, "set by the pipeline (the top-level model, the trained IDM)")
        section["model"] = cfg["model"]
        if name == "grpo":
            section["reward"] = {"idm": stand_in}
        cls.from_dict(section, source=source, section=name)
    check_distill(cfg, source)
    if "light_decoder" in cfg:
        check_light(cfg, source)


def check_light(cfg: dict, source: str) -> None:
    """The light_decoder section as training/train_light_decoder.py's config (its world model, generator
    and IDM: the pipeline's student and trained IDM, filled in later)."""
    from training.train_light_decoder import LightDecoderTrainConfig

    ld = cfg["light_decoder"]
    for where, key in (((), "world_model"), (("train",), "idm"), (("data", "twin"), "generate")):
        node = ld
        for k in where:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            raise ConfigError(source, ".".join(("light_decoder", *where)), key,
                              "set by the pipeline (the student, the trained IDM)")
    LightDecoderTrainConfig.from_dict(light_section(cfg, "<student>", "<idm>"), source=source, section="light_decoder")


def light_section(cfg: dict, student_yaml: str, idm: str) -> dict:
    """The light_decoder section with what the pipeline fills in: the student's world model (its VAE and
    its generated chunks), the twin prompts (the pipeline's tasks and demo seeds unless set), the trained
    IDM of the IDM-consistency loss, the pipeline seed."""
    ld = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg["light_decoder"].items()}
    p = cfg["pipeline"]
    ld["world_model"] = student_yaml
    data = ld.setdefault("data", {})
    if isinstance(data, dict):
        twin = data.setdefault("twin", {})
        if isinstance(twin, dict):
            twin = data["twin"] = dict(twin)
            twin.setdefault("tasks", list(p["tasks"]))
            twin.setdefault("reset_seeds", list(p["demo_seeds"]))
            twin["generate"] = [student_yaml]
    train = ld.setdefault("train", {})
    if isinstance(train, dict):
        train.update(idm=idm, seed=p.get("seed", 0))
    return ld


def check_distill(cfg: dict, source: str) -> None:
    """The distill section as eva-train-distill's config (teacher: the GRPO model, filled in later)."""
    from training.distill import DistillConfig

    if "teacher" in cfg["distill"]:
        raise ConfigError(source, "distill", "teacher", "set by the pipeline (the GRPO world model)")
    section = distill_section(cfg, idm="<filled in by the pipeline>")
    section["model"] = {**cfg["model"], **(section.get("model") or {})}   # the teacher's keys, as stage_distill's
    if not isinstance(cfg["distill"].get("model", {}), dict):
        raise ConfigError(source, "distill", "model", "expected a mapping of world_model keys")
    DistillConfig.from_dict(section, source=source, section="distill")


def distill_section(cfg: dict, idm: str) -> dict:
    """The distill section with what the pipeline fills in: the twin prompts (the demos' tasks and
    seeds, held-out: the replay seeds) unless set, the trained IDM for the eval, the pipeline seed."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg["distill"].items()}
    p = cfg["pipeline"]
    data = d.setdefault("data", {})
    if isinstance(data, dict):
        data.setdefault("twin_tasks", list(p["tasks"]))
        data.setdefault("twin_seeds", list(p["demo_seeds"]))
        data.setdefault("eval_twin_seeds", list(p["replay_seeds"]))
    for name, key, value in (("log", "idm", idm), ("train", "seed", p.get("seed", 0))):
        if isinstance(d.setdefault(name, {}), dict):
            d[name][key] = value
    return d


class Stages:
    """Times each stage and prints it as it ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.t0 = time.time()

    def run(self, name: str, fn, *a, **kw):
        print(f"train-demo: == {name}", flush=True)
        t = time.time()
        out = fn(*a, **kw)
        self.seconds[name] = round(time.time() - t, 1)
        print(f"train-demo: == {name} done in {self.seconds[name]:.0f} s (total {time.time() - self.t0:.0f} s)", flush=True)
        return out


def sh(argv: list[str], log: Path) -> None:
    """Run a CLI of this package; its output goes to the terminal and to `log`; non-zero exit is fatal."""
    print("train-demo: $ " + " ".join(str(a) for a in argv), flush=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        for line in proc.stdout:
            fh.write(line)
            if b"\r" not in line:   # progress bars stay in the log only
                sys.stdout.write(line.decode(errors="replace"))
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{argv[0]} exited {rc}; see {log}")


# ---- stages ------------------------------------------------------------------------------------------
def stage_demos(cfg: dict, out: Path) -> list[dict]:
    from eva_ros.demo.runs import record_demos

    p = cfg["pipeline"]
    records = record_demos(p["tasks"], p["demo_seeds"], out, p["camera"], float(p.get("demo_time_scale", 1.0)),
                           say=lambda line: print(f"train-demo: {line}", flush=True))
    if not any(r["success"] and r["bag"] for r in records):
        raise RuntimeError("no successful demonstration was recorded; see the logs in " + str(out / "logs"))
    return records


def demo_row(r: dict) -> dict:
    """A recorded demo in the report: task, seed, success, and whether it was retried slower."""
    return {**{k: r[k] for k in ("task", "seed", "success")}, "retried": bool(r.get("retried")),
            **({"time_scale": r["time_scale"]} if r.get("retried") else {})}


def stage_episodes(records: list[dict], out: Path) -> Path:
    from eva_ros.demo.runs import bags_to_episodes

    eps = out / "episodes"
    made = bags_to_episodes(records, eps, out / "logs" / "bag_to_episodes.log")
    print(f"train-demo: {len(made)} episodes in {eps}", flush=True)
    return eps


def stage_idm(cfg: dict, data: list[Path], out: Path) -> Path:
    """eva-train-idm with the config's idm keys (as --config); the pipeline sets data, seed and the run flags."""
    path = out / "configs" / "idm.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({k: v for k, v in cfg["idm"].items() if k != "vae_augment"}, sort_keys=False))
    sh([sys.executable, "-m", "training.train_idm", "--config", path, "--data", *data,
        "--seed", cfg["pipeline"]["seed"], "--threads", 2, "--cpu", "--no-progress",
        "--out", out / "idm"], out / "logs" / "idm.log")
    return out / "idm" / "idm"


def stage_sft(cfg: dict, episodes: Path, out: Path) -> Path:
    sft = {k: dict(v) for k, v in cfg["sft"].items()}
    sft["model"] = dict(cfg["model"])
    sft["data"]["sources"] = [str(episodes)]
    sft["train"]["seed"] = cfg["pipeline"]["seed"]
    path = out / "configs" / "sft.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sft, sort_keys=False))
    sh([sys.executable, "-m", "training.sft", "--config", path, "--output-dir", out / "sft", "--cpu"],
       out / "logs" / "sft.log")
    return out / "sft" / "final"


def stage_vae_roundtrip(cfg: dict, episodes: Path, sft_final: Path, out: Path) -> Path:
    """The episodes' frames through the fitted VAE (the IDM's second training set)."""
    from diffusers import AutoencoderKLWan

    from eva_core.world_model.vae_roundtrip import roundtrip_episodes

    vae = AutoencoderKLWan.from_pretrained(str(sft_final / "vae"), local_files_only=True).eval()
    m = cfg["model"]
    files = roundtrip_episodes(vae, episodes, out / "episodes_vae", int(m["num_frames"]), float(m["fps"]), "cam_high")
    print(f"train-demo: {len(files)} episodes round-tripped through the VAE into {out / 'episodes_vae'}", flush=True)
    return out / "episodes_vae"


def stage_vae(cfg: dict, heldout: dict, sft_final: Path) -> dict:
    """MSE/PSNR of VAE reconstructions of held-out twin clips (one per demo, where the arm moves
    most): the fitted VAE vs the random one and vs predicting the mean frame."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan

    from eva_core.world_model.tiny import build_tiny_vae, tiny_sizes

    m = cfg["model"]
    n = int(m["num_frames"])
    clips = []
    for _task, demos in heldout.items():
        for _seed, ep in demos:
            step = max(1, int(round(ep.fps / m["fps"])))
            f, q = ep.frames[::step], ep.qpos[::step]
            if len(f) >= n:   # each demo's clip with the most joint motion (a recording starts and ends at rest)
                motion = [np.abs(np.diff(q[i:i + n], axis=0)).sum() for i in range(len(f) - n + 1)]
                i = int(np.argmax(motion))
                clips.append(f[i:i + n])
    if not clips:
        return {}
    x = torch.from_numpy(np.stack(clips)).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)  # B C T H W in [-1, 1]

    def score(vae):
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = float(((rec - x) / 2).pow(2).mean())   # in [0, 1] pixel units
        return {"mse": round(mse, 6), "psnr_db": round(float(10 * np.log10(1.0 / max(mse, 1e-12))), 2)}

    fitted = AutoencoderKLWan.from_pretrained(str(sft_final / "vae"), local_files_only=True).eval()
    return {"clips": len(clips), "frames_per_clip": n, "fitted": score(fitted),
            "random_init": score(build_tiny_vae(tiny_sizes(m.get("tiny")))),
            "predict_mean_frame": {"mse": round(float(((x - x.mean(dim=(0, 2), keepdim=True)) / 2).pow(2).mean()), 6)}}


def heldout_demos(cfg: dict, out: Path) -> dict:
    """Scripted demos on the held-out replay seeds, recorded through the ROS graph exactly as the
    training demos are (an IDM is only as good as on the recording path it learned): the ground
    truth of idm_replay_success, GRPO's held-out prompts and the VAE's held-out frames.
    Returns (records, {task: [(seed, Episode)]})."""
    from eva_ros.demo.runs import bags_to_episodes, record_demos

    p = cfg["pipeline"]
    records = record_demos(p["tasks"], p["replay_seeds"], out / "heldout_graph", p["camera"],
                           float(p.get("demo_time_scale", 1.0)),
                           say=lambda line: print(f"train-demo: held-out {line}", flush=True))
    for task in p["tasks"]:
        bags_to_episodes([r for r in records if r["task"] == task], out / "heldout" / task,
                         out / "logs" / f"heldout_{task}.log")
    return records, load_heldout(cfg, out / "heldout")


def load_heldout(cfg: dict, root: Path) -> dict:
    from eva_core.data.hdf5_io import read_aloha_hdf5
    from eva_ros.demo.runs import episode_seed

    return {task: sorted(((episode_seed(f), read_aloha_hdf5(f)) for f in (root / task).glob("*.hdf5")),
                         key=lambda pair: pair[0])
            for task in cfg["pipeline"]["tasks"]}


def grpo_config(cfg: dict, out: Path, sft_final: Path, idm: Path, episodes: Path) -> Path:
    g = {k: dict(v) for k, v in cfg["grpo"].items()}
    g["model"] = {**cfg["model"], "transformer_dir": str((sft_final / "transformer").resolve()),
                  "vae_dir": str((sft_final / "vae").resolve())}
    g["data"].update(sources=[str(episodes)],
                     eval_sources=[str(out / "heldout" / t) for t in cfg["pipeline"]["tasks"]])
    g["reward"] = {"idm": str(idm.resolve())}
    g["train"]["seed"] = cfg["pipeline"]["seed"]
    path = out / "configs" / "grpo.yaml"
    path.write_text(yaml.safe_dump(g, sort_keys=False))
    return path


def stage_grpo(gcfg: Path, out: Path) -> Path:
    sh([sys.executable, "-m", "training.grpo", "--config", gcfg, "--output-dir", out / "grpo", "--cpu"],
       out / "logs" / "grpo.log")
    return run_parts(out)["lora"]


def stage_distill(cfg: dict, out: Path, sft_final: Path, lora: Path, idm: Path) -> Path:
    """eva-train-distill of the GRPO world model (SFT transformer + GRPO LoRA, merged) into the student."""
    teacher = out / "configs" / "world_model_grpo.yaml"
    teacher.write_text(yaml.safe_dump({"world_model": {
        **cfg["model"], "transformer_dir": str((sft_final / "transformer").resolve()),
        "vae_dir": str((sft_final / "vae").resolve()), "lora": str(lora.resolve()), "merge_lora": True}}, sort_keys=False))
    d = distill_section(cfg, str(idm.resolve()))
    d["teacher"] = str(teacher)
    path = out / "configs" / "distill.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    sh([sys.executable, "-m", "training.distill", "--config", path, "--output-dir", out / "distill", "--cpu"],
       out / "logs" / "distill.log")
    return out / "distill" / "final"


def stage_light(cfg: dict, out: Path, student: Path, idm: Path) -> Path:
    """training/train_light_decoder.py for the student: its VAE, its generated chunks, the trained IDM."""
    ld = light_section(cfg, str((student / "world_model.yaml").resolve()), str(idm.resolve()))
    path = out / "configs" / "light_decoder.yaml"
    path.write_text(yaml.safe_dump(ld, sort_keys=False))
    sh([sys.executable, "-m", "training.train_light_decoder", "--config", path, "--out", out / "light_decoder",
        "--no-progress"], out / "logs" / "light_decoder.log")
    return out / "light_decoder" / "light_decoder"


def light_record(run: Path, command: str) -> dict:
    """How the light decoder was made (the manifest's `light_decoder`): command, steps, its held-out eval."""
    s = json.loads((run / "summary.json").read_text())
    keys = ("steps", "clips_train", "clips_val", "generated_chunks", "encoded_clips", "val_mse", "val_psnr",
            "val_idm_action_error", "idm_loss_first10", "idm_loss_last10", "params", "config", "seconds")
    return {"command": command, "run": str(run), **{k: s.get(k) for k in keys}}


def student_record(run: Path, command: str) -> dict:
    """How a student was made (the manifest's `student`): command, config, steps, K, seed, its eval."""
    summary = json.loads((run / "summary.json").read_text())
    config = yaml_io.load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
    seed = ((config or {}).get("train") or {}).get("seed")
    return {"command": command, "run": str(run), "steps": summary.get("steps"),
            "student_steps": summary.get("student_steps"), "sigmas": summary.get("sigmas"), "seed": seed,
            "config": config, "eval": summary.get("eval")}


def stage_evaluate(cfg: dict, out: Path, gcfg: Path, idm_dir: Path, lora: Path, heldout: dict) -> dict:
    from eva_core.embodiment import load_embodiment
    from eva_core.idm import load_idm
    from eva_core.sim.idm_replay import excluded_seeds, replay_demos, replay_text

    emb = load_embodiment()
    idm = load_idm(idm_dir)
    replays = {}
    for task, demos in heldout.items():
        r = replays[task] = replay_demos(idm, task, emb, demos, len(cfg["pipeline"]["replay_seeds"]))
        r["excluded"] = excluded_seeds(cfg["pipeline"]["replay_seeds"], r["seeds"], {})
        r["text"] = replay_text(r)
        print(f"train-demo: idm_replay_success {task}: {r['text']} "
              f"(its ground-truth commands replayed: {replays[task]['gt_replay_success']})", flush=True)
    rewards = {}
    for name, extra in (("sft", []), ("grpo", ["--lora", lora])):
        d = out / f"eval_{name}"
        sh([sys.executable, "-m", "training.grpo", "--config", gcfg, "--output-dir", d, "--cpu", "--eval-only", *extra],
           out / "logs" / f"eval_{name}.log")
        rewards[name] = json.loads((d / "eval.json").read_text())
    return {"idm_replay": replays, "heldout_reward": rewards}


# ---- export ------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_export(cfg: dict, out: Path, export: Path, parts: dict, manifest: dict, overwrite: bool) -> Path:
    """Copy the parts into a temp dir beside `export`, write world_model yamls and manifest.json, swap."""
    from eva_core.cli import replace_dir_atomically

    tmp = export.parent / f".{export.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, src in parts.items():
        shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("world_model.yaml") if name == "student" else None)
    # the planner's world_model sections, paths relative to the export directory
    model = {k: v for k, v in cfg["model"].items()}
    for name, extra in (("world_model_sft", {}), ("world_model_grpo", {"lora": "lora", "merge_lora": True})):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(
            {"world_model": {**model, "transformer_dir": "transformer", "vae_dir": "vae", **extra}}, sort_keys=False))
    if "student" in parts:
        write_student_yaml(parts["student"], tmp, {**{str(Path(v).resolve()): k for k, v in parts.items()},
                                                   str(Path(parts["student"]).resolve()): "student"},
                           light="light_decoder" in parts)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    limit = float(cfg["pipeline"].get("max_export_mb", 20.0)) * 1e6
    if total > limit:
        shutil.rmtree(tmp)
        raise RuntimeError(f"export is {total / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit; make the models smaller")
    manifest["files"] = {str(p.relative_to(tmp)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    manifest["total_bytes"] = total
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    replace_dir_atomically(tmp, export, overwrite=True)
    return export


STUDENT_PATH_KEYS = ("transformer_dir", "vae_dir", "lora")


def same_files(a: Path, b: Path) -> bool:
    """Two checkpoint directories with the same relative file names and contents."""
    fa, fb = ({str(p.relative_to(d)): p for p in d.rglob("*") if p.is_file()} for d in (a, b))
    return bool(fa) and fa.keys() == fb.keys() and all(sha256(fa[k]) == sha256(fb[k]) for k in fa)


def write_student_yaml(final: Path, export: Path, names: dict, light: bool = False) -> Path:
    """world_model_student.yaml in `export`: eva-train-distill's final/world_model.yaml with every path
    made relative to the export (`names`: absolute source directory -> its name in the export); with
    `light`, it decodes through the export's light_decoder/."""
    wm = dict(yaml_io.load((Path(final) / "world_model.yaml").read_text())["world_model"])

    def rel(path: str) -> str:
        p = Path(path).resolve()
        for src, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
            if p == Path(src) or Path(src) in p.parents:
                return str(Path(name) / p.relative_to(src))
        raise ValueError(f"{final / 'world_model.yaml'}: {path} is not among the exported checkpoints")

    for key in STUDENT_PATH_KEYS:
        v = wm.get(key)
        if isinstance(v, str):
            wm[key] = rel(v)
        elif isinstance(v, list):
            wm[key] = [rel(x) for x in v]
    if light:
        wm.update(decoder="light", light_decoder="light_decoder")
    path = export / "world_model_student.yaml"
    path.write_text(yaml.safe_dump({"world_model": wm}, sort_keys=False))
    return path


def run_parts(out: Path) -> dict:
    """The checkpoint directories a finished run exports (what the stages returned; the test of
    --export-from checks that both exports agree)."""
    best = out / "grpo" / "best" / "lora"
    parts = {"idm": out / "idm" / "idm", "vae": out / "sft" / "final" / "vae",
             "transformer": out / "sft" / "final" / "transformer", "lora": best if best.is_dir() else out / "grpo" / "lora"}
    if (out / "distill" / "final" / "world_model.yaml").is_file():   # runs from before the distil stage have none
        parts["student"] = out / "distill" / "final"
    if (out / "light_decoder" / "light_decoder").is_dir():
        parts["light_decoder"] = out / "light_decoder" / "light_decoder"
    return parts


def export_finished(out: Path, export: Path, argv) -> int:
    """--export-from: the export stage alone, on a run whose summary.json says it finished."""
    summary = out / "summary.json"
    if not summary.is_file():
        raise ValueError(f"{summary}: missing; --export-from takes a finished train-demo run directory")
    manifest = json.loads(summary.read_text())
    parts = run_parts(out)
    for name, path in parts.items():
        if not path.is_dir():
            raise ValueError(f"{path}: missing ({name}); is {out} a finished train-demo run?")
    cfg = manifest["config"]
    manifest["exported_by"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    if "student" in parts and "student" not in manifest:
        manifest["student"] = student_record(out / "distill", f"{manifest['command']} (its distil stage)")
    if "light_decoder" in parts and "light_decoder" not in manifest:
        manifest["light_decoder"] = light_record(out / "light_decoder", f"{manifest['command']} (its light decoder stage)")
    stage_export(cfg, out, export, parts, manifest, True)
    print(f"train-demo: exported {out} to {export}", flush=True)
    return 0


def add_student(run: Path, export: Path, argv, student_command: str | None = None) -> int:
    """--add-student: an eva-train-distill run whose teacher is this export's world_model_grpo.yaml
    becomes the export's student/ + world_model_student.yaml + manifest entries (files, sizes, sha256,
    `student`: how it was made), without retraining the rest. The export is rewritten atomically."""
    from eva_core.cli import replace_dir_atomically

    for need in (run / "final" / "world_model.yaml", run / "summary.json", export / "manifest.json"):
        if not need.is_file():
            raise ValueError(f"{need}: missing; --add-student takes a finished eva-train-distill run and an export")
    manifest = json.loads((export / "manifest.json").read_text())
    cfg = manifest["config"]
    tmp = export.parent / f".{export.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(export, tmp, ignore=shutil.ignore_patterns("student", "world_model_student.yaml"))
    shutil.copytree(run / "final", tmp / "student", ignore=shutil.ignore_patterns("world_model.yaml"))
    names = {str(export.resolve()): ".", str((run / "final").resolve()): "student"}
    # a teacher directory elsewhere (e.g. the run's own copy of the VAE) is the export's part with the same files
    wm = yaml_io.load((run / "final" / "world_model.yaml").read_text())["world_model"]
    for key in STUDENT_PATH_KEYS:
        for v in ([wm[key]] if isinstance(wm.get(key), str) else wm.get(key) or []):
            src = Path(v).resolve()
            if not any(src == Path(n) or Path(n) in src.parents for n in names):
                same = [d.name for d in sorted(export.iterdir()) if d.is_dir() and same_files(src, d)]
                if not same:
                    raise ValueError(f"{run / 'final' / 'world_model.yaml'}: {key}: {v} is neither in {export} "
                                     "nor a copy of one of its checkpoints (was the teacher this export's GRPO model?)")
                names[str(src)] = same[0]
    write_student_yaml(run / "final", tmp, names, light=(tmp / "light_decoder").is_dir())
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != "manifest.json")
    total = sum(p.stat().st_size for p in files)
    limit = float(cfg["pipeline"].get("max_export_mb", 20.0)) * 1e6
    if total > limit:
        shutil.rmtree(tmp)
        raise RuntimeError(f"export with the student is {total / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit")
    cmd = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    manifest["student"] = student_record(run.resolve(), student_command or json.loads(
        (run / "summary.json").read_text()).get("command") or f"eva-train-distill --config {run / 'config.yaml'} "
                                                               f"--output-dir {run} --cpu")
    manifest["student"]["added_by"] = cmd
    manifest["files"] = {str(p.relative_to(tmp)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    manifest["total_bytes"] = total
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    replace_dir_atomically(tmp, export, overwrite=True)
    print(f"train-demo: added the student of {run} to {export} ({total / 1e6:.1f} MB)", flush=True)
    return 0


# ---- main --------------------------------------------------------------------------------------------
def run(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="train-demo", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "config" / "training" / "demo.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "train_demo", help="run directory")
    ap.add_argument("--export", type=Path, default=REPO / "checkpoints" / "demo", help="checkpoint directory to write")
    ap.add_argument("--no-export", action="store_true", help="leave --export alone")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="an earlier run directory: take its demos, episodes, held-out demos (and IDM, unless "
                         "idm.vae_augment, where the IDM needs this run's VAE) and their stage times instead "
                         "of running those stages again; the manifest says so")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ap.add_argument("--export-from", type=Path, default=None,
                    help="export a finished run directory (one trained with --no-export) to --export and stop; "
                         "its manifest keeps that run's command, seeds, metrics and stage times")
    ap.add_argument("--add-student", type=Path, default=None,
                    help="add a finished eva-train-distill run (teacher: --export's world_model_grpo.yaml) to --export "
                         "as its student and stop; the manifest says how the student was made")
    ap.add_argument("--student-command", default=None,
                    help="with --add-student: the command that made the run, for the manifest (default: "
                         "eva-train-distill on the run's config.yaml)")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    if args.add_student is not None:
        return add_student(args.add_student.resolve(), args.export.resolve(), argv, args.student_command)
    if args.export_from is not None:
        return export_finished(args.export_from.resolve(), args.export.resolve(), argv)
    from training.common import load_yaml

    cfg = load_yaml(args.config)
    check_config(cfg, str(args.config))
    augment = cfg["idm"].get("vae_augment", False)
    out = args.out.resolve()
    if out.exists():
        if not args.overwrite:
            raise ValueError(f"{out}: exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    import torch

    torch.set_num_threads(2)
    st = Stages()
    reused = ["demos", "episodes", "heldout demos"] + ([] if augment else ["idm"])
    idm = None
    if args.reuse is not None:
        prev = args.reuse.resolve()
        old = json.loads((prev / "summary.json").read_text())
        for name in ("bags", "episodes", "heldout") + (() if augment else ("idm",)):
            shutil.copytree(prev / name, out / name, symlinks=True)
        for name in reused:
            st.seconds[name] = old["stage_seconds"][name]
        records = [dict(r, bag=None) for r in old["demos"]]
        episodes = out / "episodes"
        idm = None if augment else out / "idm" / "idm"
        heldout = load_heldout(cfg, out / "heldout")
        heldout_records = old.get("heldout_demos", [])
        print(f"train-demo: reused {', '.join(reused)} of {prev} (their stage times are that run's)", flush=True)
    else:
        records = st.run("demos", stage_demos, cfg, out)
        episodes = st.run("episodes", stage_episodes, records, out)
        heldout_records, heldout = st.run("heldout demos", heldout_demos, cfg, out)
        if not augment:
            idm = st.run("idm", stage_idm, cfg, [episodes], out)
    sft_final = st.run("sft", stage_sft, cfg, episodes, out)
    vae = st.run("vae", stage_vae, cfg, heldout, sft_final)
    print(f"train-demo: VAE reconstruction on held-out twin clips: {vae}", flush=True)
    if augment:
        rt = st.run("vae round trip", stage_vae_roundtrip, cfg, episodes, sft_final, out)
        idm = st.run("idm", stage_idm, cfg, [episodes, rt], out)
    gcfg = grpo_config(cfg, out, sft_final, idm, episodes)
    lora = st.run("grpo", stage_grpo, gcfg, out)
    student = st.run("distil", stage_distill, cfg, out, sft_final, lora, idm)
    light = st.run("light decoder", stage_light, cfg, out, student, idm) if "light_decoder" in cfg else None
    ev = st.run("evaluate", stage_evaluate, cfg, out, gcfg, idm, lora, heldout)
    idm_eval = json.loads((out / "idm" / "eval.json").read_text())
    sft_summary = json.loads((out / "sft" / "summary.json").read_text()) if (out / "sft" / "summary.json").exists() else {}
    grpo_metrics = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    manifest = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "reused": ({"run": str(args.reuse), "command": old.get("command"), "stages": reused}
                   if args.reuse is not None else None),
        "config": yaml_io.load(args.config.read_text()),
        "seeds": {"pipeline": cfg["pipeline"]["seed"], "demo_seeds": cfg["pipeline"]["demo_seeds"],
                  "replay_seeds": cfg["pipeline"]["replay_seeds"]},
        # `retried`: the recording failed once and was recorded again at `time_scale` (runs.record_with_retry)
        "demos": [demo_row(r) for r in records],
        "heldout_demos": [demo_row(r) for r in heldout_records],
        "metrics": {"idm": {k: idm_eval.get(k) for k in ("mae", "baseline_mae", "mae_joints", "baseline_mae_joints",
                                                         "accuracy_per_dim", "accuracy_all_dims", "step")},
                    "vae": vae, "sft": sft_summary,
                    "grpo_reward_first_last": [grpo_metrics[0].get("reward_mean"), grpo_metrics[-1].get("reward_mean")]
                    if grpo_metrics else None,
                    **ev},
        "stage_seconds": st.seconds,
    }
    manifest["student"] = student_record(out / "distill", f"{manifest['command']} (its distil stage: "
                                         f"eva-train-distill --config {out / 'configs' / 'distill.yaml'})")
    if light is not None:
        manifest["light_decoder"] = light_record(out / "light_decoder", f"{manifest['command']} (its light decoder "
                                                 f"stage: {out / 'configs' / 'light_decoder.yaml'})")
    (out / "summary.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    if not args.no_export:
        parts = {"idm": idm, "vae": sft_final / "vae", "transformer": sft_final / "transformer", "lora": lora,
                 "student": student, **({"light_decoder": light} if light is not None else {})}
        st.run("export", stage_export, cfg, out, args.export.resolve(), parts, manifest, True)
        manifest["stage_seconds"] = st.seconds
        (args.export / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        # the manifest's own hash is not in itself; every other file is
    print("train-demo: stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in st.seconds.items()) +
          f"; total {time.time() - st.t0:.0f}", flush=True)
    print(f"train-demo: idm_replay_success: " + ", ".join(
        f"{t} {r.get('text', r['idm_replay_success'])}" for t, r in ev["idm_replay"].items()), flush=True)
    print(f"train-demo: held-out reward SFT {ev['heldout_reward']['sft']} | GRPO {ev['heldout_reward']['grpo']}", flush=True)
    return 0


def main(argv=None) -> int:
    from eva_core.cli import cli_main

    return cli_main("train-demo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
