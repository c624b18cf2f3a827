"""Face restoration as A1111 does it (GFPGAN / CodeFormer behind facexlib's face helper): detect faces with
RetinaFace, warp each to the 512 px FFHQ template by its five landmarks, restore it, warp it back and paste
it in with a soft-edged mask, then blend the result with the input at the visibility.

The paste mask is facexlib's without its face-parsing network (an eroded, blurred box): the parsing weights
are not needed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from sdwebui.engine.errors import RequestError
from sdwebui.models.face_restorers import (
    CODEFORMER,
    GFPGAN,
    RESTORERS,
    FaceRestorerError,
    FaceRestorerLibrary,
)

FACE_SIZE = 512
# facexlib's five-point FFHQ template for a 512 px face (eyes, nose, mouth corners)
FACE_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
DETECTION_THRESHOLD = 0.97  # facexlib's FaceRestoreHelper
EYE_DISTANCE_MIN = 5  # A1111: faces with eyes closer than this (pixels) are skipped


class FaceRestorationError(RequestError):
    """A missing or unusable restorer / detector file or a bad restorer name (a 4xx naming the field)."""


@contextlib.contextmanager
def _as_request_error():
    try:
        yield
    except FaceRestorerError as error:
        raise FaceRestorationError(error.field, str(error)) from None


@dataclass(frozen=True)
class FaceRestorers:
    """What running face restoration needs: the files and the device."""

    library: FaceRestorerLibrary
    device: torch.device = torch.device("cpu")


@dataclass(frozen=True)
class FaceRestorationSettings:
    """The settings of txt2img / img2img `restore_faces` (A1111's face_restoration_model, code_former_weight,
    face_restoration_unload); `restorers` None: this server has none."""

    restorers: FaceRestorers | None = None
    model: str = CODEFORMER
    codeformer_weight: float = 0.5
    unload: bool = False


def check_available(settings: FaceRestorationSettings, field_name: str = "restore_faces") -> None:
    """FaceRestorerError (a 4xx naming the field) unless the chosen restorer's file and the detector exist."""
    if settings.restorers is None:
        raise FaceRestorationError(field_name, "face restoration is not available on this server")
    check_name(settings.model, "face_restoration_model")
    with _as_request_error():
        settings.restorers.library.restorer_file(settings.model, field_name)
        settings.restorers.library.detector_file(field_name)


def restore_for_job(image: Image.Image, settings: FaceRestorationSettings) -> Image.Image:
    """txt2img / img2img `restore_faces`: the chosen restorer at full visibility (A1111)."""
    check_available(settings)
    assert settings.restorers is not None
    return restore_faces(
        image, settings.model, settings.restorers, 1.0, settings.codeformer_weight, unload=settings.unload
    )


def check_name(name: str, field_name: str) -> None:
    if name not in RESTORERS:
        raise FaceRestorationError(
            field_name, f"unknown face restorer {name!r}; choose one of {list(RESTORERS)}"
        )


def restore_faces(
    image: Image.Image,
    name: str,
    restorers: FaceRestorers,
    visibility: float = 1.0,
    codeformer_weight: float = 0.5,
    field_name: str = "restore_faces",
    unload: bool = False,
) -> Image.Image:
    """`image` with its faces restored by `name`, blended in at `visibility` (0: the input unchanged)."""
    check_name(name, field_name)
    if visibility <= 0:
        return image.copy()
    library, device = restorers.library, restorers.device
    with _as_request_error():
        detector = library.detector(device, field_name)
        network = library.restorer(name, device, field_name)
    rgb = image.convert("RGB")
    bgr = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
    try:
        with torch.inference_mode():
            restored = _restore_bgr(
                bgr, detector, lambda face: _run(network, name, face, codeformer_weight, device)
            )
    finally:
        if unload:
            library.unload(name)
            library.unload("detector")
    result = Image.fromarray(cv2.cvtColor(restored, cv2.COLOR_BGR2RGB))
    if visibility < 1.0:
        result = Image.blend(rgb, result, visibility)
    if image.mode == "RGBA":
        result.putalpha(image.getchannel("A"))
    return result


def _run(
    network: torch.nn.Module, name: str, face: np.ndarray, weight: float, device: torch.device
) -> np.ndarray:
    """One aligned BGR uint8 face through the network (inputs and outputs in [-1, 1], as GFPGAN trains)."""
    rgb = face[:, :, ::-1].astype(np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device) * 2.0 - 1.0
    if name == GFPGAN:
        # the fixed noise buffers instead of fresh noise: the same input gives the same face (A1111's is random)
        output = network(tensor, return_rgb=False, randomize_noise=False)[0]
    else:
        output = network(tensor, weight=weight)[0]
    pixels = ((output[0].float().clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray((pixels * 255.0).round().astype(np.uint8)[:, :, ::-1])


def _restore_bgr(bgr: np.ndarray, detector, restore) -> np.ndarray:
    detections = detector.detect_faces(bgr, DETECTION_THRESHOLD)
    result = bgr.astype(np.float32)
    height, width = bgr.shape[:2]
    for detection in detections:
        landmarks = np.asarray(detection[5:15], dtype=np.float32).reshape(5, 2)
        if np.linalg.norm(landmarks[0] - landmarks[1]) < EYE_DISTANCE_MIN:
            continue
        affine = cv2.estimateAffinePartial2D(landmarks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
        if affine is None:
            continue
        face = cv2.warpAffine(
            bgr, affine, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132)
        )
        restored = restore(face)
        inverse = cv2.invertAffineTransform(affine)
        back = cv2.warpAffine(restored, inverse, (width, height)).astype(np.float32)
        mask = _paste_mask(inverse, width, height)
        result = mask[:, :, None] * back + (1.0 - mask[:, :, None]) * result
    return result.clip(0, 255).round().astype(np.uint8)


def _paste_mask(inverse: np.ndarray, width: int, height: int) -> np.ndarray:
    """facexlib's soft mask of the pasted face: the warped square, eroded, its edge blurred."""
    square = np.ones((FACE_SIZE, FACE_SIZE), dtype=np.float32)
    mask = cv2.erode(cv2.warpAffine(square, inverse, (width, height)), np.ones((2, 2), np.uint8))
    edge = int(float(mask.sum()) ** 0.5) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((edge * 2, edge * 2), np.uint8))
        mask = cv2.GaussianBlur(mask, (edge * 2 + 1, edge * 2 + 1), 0)
    return mask


@dataclass(frozen=True)
class ExtrasFaces:
    """Extras' face restoration steps (A1111's GFPGAN then CodeFormer, after the upscaling)."""

    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.5

    def steps(self) -> list[tuple[str, float, str]]:
        """(restorer, visibility, field) of each step that runs."""
        pairs = ((GFPGAN, self.gfpgan_visibility, "gfpgan_visibility"),)
        pairs += ((CODEFORMER, self.codeformer_visibility, "codeformer_visibility"),)
        return [step for step in pairs if step[1] > 0]


def plan_extras_faces(
    gfpgan: float | None, codeformer: float | None, weight: float | None, restorers: FaceRestorers | None
) -> ExtrasFaces:
    """The checked face steps of an Extras request: each value in [0, 1]; the files of each step that runs exist."""
    values = {"gfpgan_visibility": gfpgan, "codeformer_visibility": codeformer, "codeformer_weight": weight}
    for field_name, value in values.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise FaceRestorationError(field_name, f"must be between 0 and 1, got {value:g}")
    faces = ExtrasFaces(gfpgan or 0.0, codeformer or 0.0, 0.5 if weight is None else weight)
    for name, _visibility, field_name in faces.steps():
        if restorers is None:
            raise FaceRestorationError(field_name, "face restoration is not available on this server")
        with _as_request_error():
            restorers.library.restorer_file(name, field_name)
            restorers.library.detector_file(field_name)
    return faces


def restore_extras(
    image: Image.Image, faces: ExtrasFaces, restorers: FaceRestorers | None, unload: bool = False
) -> Image.Image:
    for name, visibility, field_name in faces.steps():
        assert restorers is not None  # plan_extras_faces checked it
        image = restore_faces(image, name, restorers, visibility, faces.codeformer_weight, field_name, unload)
    return image
