"""``pip install .`` into a fresh virtual environment: the console command and ``python -m
detr_irpe`` run from another folder, the shipped configs are found by name, and an evaluation on
the synthetic data runs with the installed copy (not the checkout)."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from detr_irpe.hub.checkpoint import save_checkpoint
from detr_irpe.config import config_to_dict, load_config, shipped_configs
from detr_irpe.models import build_model
from detr_irpe.config.resolve import resolve_config

ROOT = Path(__file__).resolve().parents[1]

#: the tiny config, made small enough to generate and evaluate in seconds
SMALL = ["data.synthetic.num_train=8", "data.synthetic.num_val=4", "model.backbone.width=8", "model.hidden_dim=32",
         "model.nheads=4", "model.dim_feedforward=64", "eval.batch_size=4"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A virtual environment with this project installed from the checkout, its dependencies
    seen through the test environment's site-packages (nothing is downloaded)."""
    root = tmp_path_factory.mktemp("install")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next(env_dir.glob("lib/python*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-build-isolation", str(ROOT)], check=True, capture_output=True)
    return env_dir


def run(venv, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_console_command_runs_from_another_folder(venv, tmp_path):
    out = run(venv, venv / "bin" / "detr-irpe", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "evaluate" in out.stdout and "zoo" in out.stdout
    out = run(venv, venv / "bin" / "detr-irpe", "evaluate", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "--checkpoint" in out.stdout


def test_the_installed_copy_is_used_and_ships_every_config(venv, tmp_path):
    code = ("import json, detr_irpe, detr_irpe.config as c; "
            "print(json.dumps([detr_irpe.__file__, c.shipped_configs()]))")
    out = run(venv, venv / "bin" / "python", "-c", code, cwd=tmp_path)
    path, names = json.loads(out.stdout)
    assert Path(path).is_relative_to(venv) and names == shipped_configs()
    package = ROOT / "detr_irpe"
    installed = Path(path).parent
    modules = sorted(str(p.relative_to(package)) for p in package.rglob("*.py"))
    assert modules == sorted(str(p.relative_to(installed)) for p in installed.rglob("*.py")
                             if not p.is_relative_to(installed / "configs"))


def test_python_m_evaluates_on_the_synthetic_data_by_config_name(venv, tmp_path):
    overrides = SMALL + [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"]
    cfg = load_config("tiny/abs", overrides)
    from detr_irpe.data.build import build_dataset
    from detr_irpe.data.synthetic import ensure_synthetic

    ensure_synthetic(cfg.data.synthetic, progress=False)
    cfg = resolve_config(cfg, dataset=build_dataset(cfg, "train"))
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint({"model": build_model(cfg)[0].state_dict(), "config": config_to_dict(cfg)}, ckpt)
    out = run(venv, venv / "bin" / "python", "-m", "detr_irpe", "evaluate", "--checkpoint", ckpt,
              "--config", "tiny/abs", *overrides, "--output-dir", tmp_path / "eval", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 4
