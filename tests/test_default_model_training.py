"""The default model's trainer end to end at a toy size: VAE, decoder, U-Net + text encoder, export, resume.

The exported file must load through the same loader as user checkpoints and generate through the engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sdwebui.engine import default_model_runs as backends

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import train_default_model  # noqa: E402

TOY = [
    "--threads", "1", "--workers", "1", "--image-pool", "64", "--vae-batch", "4", "--vae-steps", "3",
    "--decoder-steps", "2", "--latent-pool", "64", "--batch", "4", "--unet-steps", "3",
    "--unet-channels", "8,16,32", "--eval-prompts", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    output = root / "toy.safetensors"
    train_default_model.main([*TOY, "--output", str(output), "--work-dir", str(root / "work")])
    return output


def test_training_exports_a_checkpoint_the_loader_and_engine_use(trained):
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    assert sidecar["scheduler"]["prediction_type"] == "v_prediction"
    assert sidecar["scheduler"]["rescale_betas_zero_snr"] is True
    assert sidecar["unet"]["block_out_channels"] == [8, 16, 32]
    model = backends.load(trained)
    assert model.prediction_type == "v_prediction" and model.native_resolution == 64
    (image,) = backends.engine_txt2img(model, ["a red circle"], [1], steps=2)
    assert image.size == (64, 64) and np.isfinite(np.asarray(image, dtype=np.float32)).all()
    assert (trained.parent / "work" / "vae" / "config.json").is_file()


def test_training_continues_from_an_exported_checkpoint(trained, tmp_path):
    output = tmp_path / "resumed.safetensors"
    args = [*TOY, "--output", str(output), "--resume-from", str(trained), "--partial-caption-fraction", "0.5"]
    train_default_model.main(args)
    before, after = backends.load(trained), backends.load(output)
    assert after.vae.config.scaling_factor == pytest.approx(before.vae.config.scaling_factor)
    moved = [
        (a.float() - b.float()).abs().max().item()
        for a, b in zip(before.unet.parameters(), after.unet.parameters(), strict=True)
    ]
    assert max(moved) > 0
    with pytest.raises(SystemExit, match="another schedule"):
        train_default_model.main(
            [*TOY, "--output", str(output), "--resume-from", str(trained), "--beta-end", "0.02"]
        )


def test_time_budget_and_bad_flags_are_reported(capsys):
    with pytest.raises(SystemExit):
        train_default_model.parse_args(["--prediction-type", "epsilon", "--zero-terminal-snr"])
    assert "zero terminal SNR needs v-prediction" in capsys.readouterr().err
    cfg = train_default_model.parse_args(["--preset", "cpu-90min", "--batch", "32"])
    assert cfg.unet_minutes == 60 and cfg.batch == 32 and cfg.unet_channels == (32, 64, 128)


def test_step_budget_fits_the_minutes_and_follows_a_changing_speed(monkeypatch):
    from sdwebui.models.default_model import train

    clock = [1000.0]
    monkeypatch.setattr(train.time, "time", lambda: clock[0])
    budget = train.StepBudget("test", steps=1000, minutes=1, probe=8)
    done = 0
    while done < 8:  # 1 s per step: 60 steps fit in the minute
        clock[0] += 1.0
        done += 1
        budget.update(done)
    assert budget.total == 60
    while done < budget.total:  # the machine gets twice as fast: the plan grows, within the minute
        clock[0] += 0.5
        done += 1
        budget.update(done)
    assert 60 < budget.total <= 1000
    assert clock[0] - 1000.0 <= 62
    fixed = train.StepBudget("test", steps=7, minutes=None, probe=8)
    fixed.update(8)
    assert fixed.total == 7
