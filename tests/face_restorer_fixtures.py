"""Face restoration files in their real layouts with random weights, written once per session: GFPGAN v1.4
(spandrel's fixed 512 px architecture), CodeFormer (spandrel_extra_arches) and facexlib's RetinaFace ResNet-50
detector. The detector's three 1x1 heads are set so that it reports exactly one face on a 64x64 image (the
512 px anchors of the stride-32 level, all others off) with the five landmarks of a ~50 px face around the
anchor's centre; its backbone keeps its random weights. Weights are stored in fp16 to halve the files
(~180 MB each for the restorers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

GFPGAN_FILE = "GFPGANv1.4.safetensors"
CODEFORMER_FILE = "codeformer-v0.1.0.safetensors"
DETECTOR_FILE = "detection_Resnet50_Final.pth"
FACE_SCALE = 0.1  # the fixture face is this fraction of the 512 px template
# facexlib's FFHQ five-point template (512 px face)
TEMPLATE = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
    dtype=np.float32,
)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def gfpgan_state() -> dict[str, torch.Tensor]:
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(1)
    model = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    return _half(model.state_dict())


def codeformer_state() -> dict[str, torch.Tensor]:
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(2)
    return _half(CodeFormer().state_dict())


def detector_state() -> dict[str, torch.Tensor]:
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(3)
    model = RetinaFace(network_name="resnet50", half=False, device=torch.device("cpu"))
    for level in range(3):
        for head in (model.ClassHead[level], model.BboxHead[level], model.LandmarkHead[level]):
            torch.nn.init.zeros_(head.conv1x1.weight)
            torch.nn.init.zeros_(head.conv1x1.bias)
        model.ClassHead[level].conv1x1.bias.data[:] = torch.tensor([8.0, -8.0, 8.0, -8.0])  # no face
    model.ClassHead[2].conv1x1.bias.data[2:] = torch.tensor([-8.0, 8.0])  # anchor 512 of stride 32: a face
    # landmark = anchor centre + bias * variance (0.1) * anchor size (512 px)
    offsets = (TEMPLATE - 256.0) * FACE_SCALE / (0.1 * 512.0)
    model.LandmarkHead[2].conv1x1.bias.data[10:] = torch.from_numpy(offsets.reshape(-1))
    return _half(model.state_dict())


@pytest.fixture(scope="session")
def face_model_cache(tmp_path_factory) -> Path:
    """The three files, written once (GFPGAN and the detector; CodeFormer on first use of `write_codeformer`)."""
    root = tmp_path_factory.mktemp("face-models")
    save_file(gfpgan_state(), root / GFPGAN_FILE)
    torch.save(detector_state(), root / DETECTOR_FILE)
    return root


def install_face_models(cache: Path, folder: Path) -> None:
    """GFPGAN and the detector into `folder` (copies: the folders list regular files inside them only)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (GFPGAN_FILE, DETECTOR_FILE):
        shutil.copyfile(cache / name, folder / name)


def write_codeformer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CODEFORMER_FILE
    if not path.exists():
        save_file(codeformer_state(), path)
    return path
