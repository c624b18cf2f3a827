"""openpose (body): the body network's maps parsed into people and drawn as the extension draws them.

Inference as the extension: the image (BGR) scaled so its height is 184 px (0.5 x 368), padded to a
multiple of 8 with grey, maps upsampled back to the image. Parsing (Cao et al.): heat-map peaks after a
sigma-3 Gaussian over 0.1; limb candidates scored by the part affinity field sampled at 10 points (over
80 % above 0.05, with a distance prior), matched greedily; limbs joined into people, who keep at least
4 parts and a mean score of 0.4. Drawing: 17 limbs as ellipses (60 % colour), 18 joints as circles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sdwebui.engine.controlnet.preprocessors import openpose_net
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import device_of, network

BODY = "openpose/body_pose_model.pth"
PARTS = 18
# limbs as (part A, part B) (0-based COCO-18 order) and their PAF channels (x, y)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))  # fmt: skip
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7),
                (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27))  # fmt: skip
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))  # fmt: skip


@dataclass(frozen=True)
class Peak:
    x: int
    y: int
    score: float
    id: int  # index over all parts' peaks


@dataclass
class Person:
    parts: list[int]  # per part the peak id, -1: not found
    score: float = 0.0
    count: int = 0


def find_peaks(heatmaps: np.ndarray, threshold: float = 0.1) -> list[list[Peak]]:
    """Per part, the local maxima (4-neighbourhood) of the smoothed heat map above `threshold`."""
    from scipy.ndimage import gaussian_filter  # heavy to import: only when openpose runs, not at start-up

    peaks: list[list[Peak]] = []
    counter = 0
    for part in range(PARTS):
        raw = heatmaps[:, :, part]
        smooth = gaussian_filter(raw, sigma=3)
        padded = np.pad(smooth, 1)
        is_peak = (smooth > threshold) & (smooth >= padded[:-2, 1:-1]) & (smooth >= padded[2:, 1:-1])
        is_peak &= (smooth >= padded[1:-1, :-2]) & (smooth >= padded[1:-1, 2:])
        ys, xs = np.nonzero(is_peak)
        peaks.append(
            [
                Peak(int(x), int(y), float(raw[y, x]), counter + i)
                for i, (y, x) in enumerate(zip(ys, xs, strict=True))
            ]
        )
        counter += len(ys)
    return peaks


def _limb_score(a: Peak, b: Peak, paf: np.ndarray, height: int) -> float | None:
    """The affinity of a -> b along `paf` [H, W, 2], or None when the field does not support the limb."""
    vector = np.array([b.x - a.x, b.y - a.y], dtype=np.float64)
    norm = max(0.001, math.hypot(*vector))
    xs = np.rint(np.linspace(a.x, b.x, num=10)).astype(int)
    ys = np.rint(np.linspace(a.y, b.y, num=10)).astype(int)
    along = paf[ys, xs] @ (vector / norm)
    score = float(along.mean()) + min(0.5 * height / norm - 1, 0)
    if np.count_nonzero(along > 0.05) > 0.8 * len(along) and score > 0:
        return score
    return None


def connect_limb(
    limb: int, peaks: list[list[Peak]], pafs: np.ndarray
) -> list[tuple[Peak, Peak, float]] | None:
    """The limb's (A, B, score) connections, best first, each peak used once; None: a part has no peaks."""
    part_a, part_b = LIMBS[limb]
    cand_a, cand_b = peaks[part_a], peaks[part_b]
    if not cand_a or not cand_b:
        return None
    paf = pafs[:, :, list(PAF_CHANNELS[limb])]
    scored = [
        (score, i, j)
        for i, a in enumerate(cand_a)
        for j, b in enumerate(cand_b)
        if (score := _limb_score(a, b, paf, pafs.shape[0])) is not None
    ]
    used_a, used_b, chosen = set(), set(), []
    for score, i, j in sorted(scored, key=lambda s: s[0], reverse=True):
        if i not in used_a and j not in used_b:
            used_a.add(i), used_b.add(j)
            chosen.append((cand_a[i], cand_b[j], score))
            if len(chosen) >= min(len(cand_a), len(cand_b)):
                break
    return chosen


def _join(people: list[Person], limb: int, a: Peak, b: Peak, score: float) -> None:
    part_a, part_b = LIMBS[limb]
    found = [p for p in people if p.parts[part_a] == a.id or p.parts[part_b] == b.id][:2]
    if len(found) == 2 and not any(
        i >= 0 and j >= 0 for i, j in zip(found[0].parts, found[1].parts, strict=True)
    ):
        first, second = found
        first.parts = [
            i + j + 1 for i, j in zip(first.parts, second.parts, strict=True)
        ]  # disjoint: -1 + id + 1 = id
        first.score += second.score + score
        first.count += second.count
        people.remove(second)
    elif found:  # one person has the limb's part (or two that overlap: the first takes part B)
        person = found[0]
        if len(found) == 2 or person.parts[part_b] != b.id:
            person.parts[part_b] = b.id
            person.count += 1
            person.score += b.score + score
    elif limb < 17:  # the two ear-shoulder limbs never start a person
        parts = [-1] * PARTS
        parts[part_a], parts[part_b] = a.id, b.id
        people.append(Person(parts, a.score + b.score + score, 2))


def find_people(heatmaps: np.ndarray, pafs: np.ndarray) -> tuple[list[Person], list[Peak]]:
    """People (at least 4 parts, mean score 0.4) from heat maps [H, W, 19] and PAFs [H, W, 38]."""
    peaks = find_peaks(heatmaps)
    people: list[Person] = []
    for limb in range(len(LIMBS)):
        for a, b, score in connect_limb(limb, peaks, pafs) or []:
            _join(people, limb, a, b, score)
    kept = [p for p in people if p.count >= 4 and p.score / p.count >= 0.4]
    return kept, [peak for part in peaks for peak in part]


def draw_people(canvas: np.ndarray, people: list[Person], peaks: list[Peak]) -> np.ndarray:
    """The extension's body drawing on `canvas` (uint8 [H, W, 3], changed in place and returned)."""
    by_id = {p.id: p for p in peaks}
    for person in people:
        points = [by_id[i] if i >= 0 else None for i in person.parts]
        for (part_a, part_b), color in zip(LIMBS[:17], COLORS, strict=False):
            a, b = points[part_a], points[part_b]
            if a is None or b is None:
                continue
            length = math.hypot(a.x - b.x, a.y - b.y)
            angle = math.degrees(math.atan2(a.y - b.y, a.x - b.x))
            centre = (int((a.x + b.x) / 2), int((a.y + b.y) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), 4), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
        for point, color in zip(points, COLORS, strict=True):
            if point is not None:
                cv2.circle(canvas, (point.x, point.y), 4, color, thickness=-1)
    return canvas


def _resize(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width + height < maps.shape[0] + maps.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
    channels = [
        cv2.resize(maps[:, :, i], (width, height), interpolation=interpolation) for i in range(maps.shape[2])
    ]
    return np.stack(channels, axis=2)


def body_maps(bgr: np.ndarray, net: openpose_net.OpenPoseBody) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps [H, W, 19], PAFs [H, W, 38]) of a BGR image at its own size."""
    height, width = bgr.shape[:2]
    scale = 0.5 * 368 / height
    scaled = _resize(bgr, int(width * scale), int(height * scale)).astype(np.float32)
    sh, sw = scaled.shape[:2]
    padded = np.pad(scaled, ((0, -sh % 8), (0, -sw % 8), (0, 0)), constant_values=128)
    with torch.no_grad():
        x = (
            torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].to(device_of(net)) / 256
            - 0.5
        )
        pafs, heat = (t[0].permute(1, 2, 0).cpu().numpy() for t in net(x))
    maps = []
    for m in (heat, pafs):
        up = _resize(m, m.shape[1] * 8, m.shape[0] * 8)[:sh, :sw]
        maps.append(_resize(up, width, height))
    return maps[0], maps[1]


def openpose_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the pose drawing (uint8 [H, W, 3] on black) at the processor resolution."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(openpose_net.build, weights, params.device)
    heatmaps, pafs = body_maps(padded[:, :, ::-1], net)
    people, peaks = find_people(heatmaps, pafs)
    canvas = np.zeros(padded.shape, dtype=np.uint8)
    return remove_pad(draw_people(canvas, people, peaks))
