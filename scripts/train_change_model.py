#!/usr/bin/env python
"""Train the ``learned`` change detector and export it to ONNX (``inspection/models/change_net.*``).

Training data, built here, deterministically from ``--seed`` (shares in :class:`Sampler`):

* the labelled real pairs in ``../shared/data/changes`` (or ``$GRIDMAP_SHARED_DATA/changes``), pairs of
  512 px and more cut into quadrants ("units"), less the held-out ones, with heavy augmentation: scale,
  flips and quarter turns, before and after swapped (the sets label buildings that appear and that
  disappear alike), a sub-pixel shift of the after image, independent colour, gain, gamma, blur and noise
  for each date; half of them with real buildings of other units pasted in (copy-paste); a unit smaller
  than the training crop is reduced at its true scale and mirrored out to the crop, never stretched;
* "pasted building" pairs: a real image of a training unit against a re-lit copy of itself with real
  buildings cut from the training units' labels pasted in (some on both dates: not change; some of those
  replaced by another building on the later date, rebuilt, or given a rooftop addition: change), or
  procedural roofs (rectangles and L shapes, gable shading, a cast shadow, colour-steel blue, white, grey,
  red, brown; now and then a flat hall of 40-140 m) drawn in; plus unlabelled distractors (a lawn or field
  that changes colour, new shade, a new road or paved yard);
* "no change" pairs: a real image against a re-lit, slightly shifted copy of itself (label empty);
* synthetic surveys of the demo street (:mod:`inspection.synthetic`) at 0.2-0.6 m with their known
  sheds, rooftop additions and rebuilt buildings.

The model (:func:`build_model`): a siamese U-Net on standardised Lab at half resolution, five levels deep,
with two output maps: change, and each changed building's core (:func:`core_target`), from which the
detector splits a region that joins several buildings; loss BCE + soft Dice on each map (the core's at half
weight); AdamW with a one-cycle schedule; the exported weights are an exponential moving average of the
trained ones. Exported to ONNX and quantised to 8 bits (:func:`export`).

Validation: ``--kfold`` holds out every third unit of each set in turn (new pairs of the kinds it was
trained on, which is how the detector is judged); ``--loso`` holds out a whole set in turn (a kind of
imagery it has never seen). Either then trains the shipped model on every unit, chooses its thresholds on
the held-out maps (:func:`merge_folds`) and writes the held-out figures into its metadata.

Usage::

    python scripts/train_change_model.py --kfold         # three folds over units, then the model on all data
    python scripts/train_change_model.py --loso          # three leave-one-set-out folds, then the model on all data
    python scripts/train_change_model.py --fold 0/3 --out /tmp/fold-0
    python scripts/train_change_model.py --holdout whu-1024 --out /tmp/fold-whu
    python scripts/train_change_model.py --out inspection/models   # all data, no fold figures

Needs the ``train`` extra (``pip install -e .[train]``: torch and onnx); inference needs neither (onnxruntime
runs the model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspection.change import read_rgb  # noqa: E402
from inspection.evaluate import _read_label, discover_pairs, metrics, score_pair  # noqa: E402
from inspection.learned import MODEL_FORMAT, encode_pair, pair_statistics  # noqa: E402

SETS = ("dsifn-256", "levir-256", "whu-1024")
STEP = 2  # working scale: half resolution
CROP = 160  # training crop, working-scale pixels
# Five levels: the deepest features, at 1/32 of the working scale, see about 120 working pixels each way, so
# the inside of a large new roof (a 150 m warehouse is 150 working pixels at 0.5 m) is judged with its edges
# in view; with four levels the network missed such interiors. The fifth level costs about 5 % more work.
# The two deepest levels are wide (96 and 160, not 64 and 96): they decide which changed ground is a building,
# what the held-out errors were mostly about, and they run on 1/256 and 1/1024 of the pixels, so the extra
# parameters cost little speed (held out 0.588 / 0.656 against 0.573 / 0.550; 80 and 128 gave 0.588 / 0.636).
CHANNELS = (16, 32, 48, 96, 160)
UNIT_SPLIT = 512  # real pairs at least this wide are cut into quadrants (validation units)
CORE_DEPTH = 0.5  # an object's core: pixels at least this share of its inner radius deep
# Weight averaging: about the last 500 steps. A stochastic-weight-averaging tail after the schedule (three
# cosine cycles of 500 steps) scored no better held out, in the same runs (0.577 / 0.662 against 0.577 / 0.689).
EMA_DECAY = 0.998
# Training steps (batches of --batch crops). 6,000 rather than 4,000: held out 0.575 / 0.702 against 0.588 / 0.656
# (106 rather than 99 of 151 buildings found, object precision 0.331 against 0.288), about 32 min a model on
# one thread. 8,000 overfit (folds 0 and 1: 0.541 / 0.533, against 0.590 / 0.705 at 6,000): the figures move
# by hundredths with the length of training alone, and as much with the seed (2027: 0.560 / 0.623;
# 2028: 0.529 / 0.636).
STEPS = 6000


def shared_changes() -> Path:
    base = os.environ.get("GRIDMAP_SHARED_DATA") or ROOT.parent / "shared" / "data"
    return Path(base) / "changes"


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def real_units() -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Every labelled real pair as ``(set, unit name, before, after, label)``, large pairs cut in four.

    A pair wider than :data:`UNIT_SPLIT` pixels becomes its four quadrants, so the one 1024 px WHU pair
    can lend some of its area to a validation fold and the rest to training.
    """
    units = []
    for set_name, items in discover_pairs(shared_changes()).items():
        for a, b, lab in items:
            before, after, label = read_rgb(a), read_rgb(b), _read_label(lab).astype(np.uint8)
            h, w = label.shape
            if min(h, w) < UNIT_SPLIT:
                units.append((set_name, a.name, before, after, label))
                continue
            for k, (y, x) in enumerate(((0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2))):
                window = (slice(y, y + h // 2), slice(x, x + w // 2))
                units.append((set_name, f"{a.name}#{k}", before[window], after[window], label[window]))
    return units


def split_units(units, holdout: str | None, fold: tuple[int, int] | None):
    """(training units, validation units): a whole set held out, or every ``n``-th unit of each set from ``k``."""
    train, valid = [], []
    counters: dict[str, int] = {}
    for unit in units:
        index = counters[unit[0]] = counters.get(unit[0], -1) + 1
        held = unit[0] == holdout or (fold is not None and index % fold[1] == fold[0])
        (valid if held else train).append(unit)
    return train, valid


def core_target(label: np.ndarray) -> np.ndarray:
    """The object cores of a binary label: the pixels of each region at least half its inner radius deep.

    Cores of neighbouring buildings stay apart even when the buildings almost touch, so the detector can
    seed one region per building and split a blob that covers several (object recall counts buildings).
    """
    binary = (label > 0.5).astype(np.uint8)
    count, regions = cv2.connectedComponents(binary, connectivity=8)
    if count <= 1:
        return np.zeros(label.shape, np.float32)
    depth = cv2.distanceTransform(binary, cv2.DIST_L2, 3)
    deepest = np.zeros(count, np.float32)
    np.maximum.at(deepest, regions.ravel(), depth.ravel())
    return (depth >= np.maximum(1.0, CORE_DEPTH * deepest[regions])).astype(np.float32) * binary


def synthetic_pairs(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Demo-street surveys at 0.2-0.6 m: (before, after, label) rendered in memory."""
    import geopandas as gpd

    from gridmap.demo import METRIC_CRS, generate_demo_street
    from inspection import synthetic as S

    units = generate_demo_street()
    out = []
    for k in range(count):
        rng = np.random.default_rng([seed, 7, k])
        resolution = float(rng.uniform(0.2, 0.6))
        centre = (S.CENTRE[0] + rng.uniform(-0.002, 0.002), S.CENTRE[1] + rng.uniform(-0.002, 0.002))
        scene = S.demo_scene(seed=1000 + k, centre=centre, size_m=220.0, resolution=resolution, units=units)
        before = S.render_survey(scene, seed=2 * k, texture_seed=k)
        truth = S._add_changes(scene, np.random.default_rng([seed, 8, k]), sheds=int(rng.integers(6, 16)),
                               rooftops=int(rng.integers(3, 9)))
        after = S.render_survey(scene, seed=2 * k + 1, texture_seed=k)
        label = np.zeros(scene.shape, np.uint8)
        for geometry in gpd.GeoSeries(truth.geometry, crs=truth.crs).to_crs(METRIC_CRS):
            for polygon in S._polygons(geometry):
                crop, mask = S._mask(scene.shape, scene.transform, polygon)
                if crop is not None:
                    label[crop][mask] = 1
        out.append((before, after, label))
    return out


def relight(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Another day and camera: per-channel gain and offset, gamma, saturation, sometimes blur and noise."""
    x = image.astype(np.float32) / 255.0
    gamma = math.exp(rng.normal(0, 0.15 * strength))
    x = np.power(np.clip(x, 0, 1), gamma)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.35 * strength, 1 + 0.35 * strength)
    x = x * rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength, 3) + rng.uniform(-0.08, 0.08, 3) * strength
    x = x * 255.0
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(1, 5), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


ROOF_PALETTE = np.float32([
    (62, 105, 190), (48, 104, 186), (236, 236, 232), (210, 212, 214), (150, 150, 148), (110, 110, 115),
    (170, 80, 60), (196, 60, 48), (125, 95, 75), (190, 175, 150), (80, 80, 86), (95, 140, 170),
])


def paste_roofs(image: np.ndarray, rng: np.random.Generator, px_per_m: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with 1-6 procedural roofs drawn in (and their shadows), and the roofs' mask; one in five
    images gets a hall of 40-140 m, wider than the crop."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    label = np.zeros((h, w), np.uint8)
    sun = rng.uniform(0, 2 * np.pi)
    for k in range(int(rng.integers(1, 7))):
        large = k == 0 and rng.random() < 0.2  # a warehouse or factory hall: flat, plain, larger than the crop
        length = (rng.uniform(40, 140) if large else rng.uniform(5, 35)) * px_per_m
        depth = (rng.uniform(25, 70) if large else rng.uniform(4, 20)) * px_per_m
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (length, depth), angle))
        polys = [box]
        if rng.random() < 0.3:  # an L: a second wing on one end
            wing = cv2.boxPoints(((cx + 0.3 * length * math.cos(math.radians(angle)),
                                   cy + 0.3 * length * math.sin(math.radians(angle))),
                                  (depth, length * rng.uniform(0.6, 1.2)), angle))
            polys.append(wing)
        roof = np.zeros((h, w), np.uint8)
        for p in polys:
            cv2.fillPoly(roof, [np.round(p).astype(np.int32)], 1)
        # shadow: the roof moved away from the sun, drawn first and outside the roof
        height_px = rng.uniform(1.5, 6) * px_per_m
        shadow = shift(roof * 255, height_px * math.cos(sun), height_px * math.sin(sun)) > 127
        shadow &= roof == 0
        out[shadow] *= rng.uniform(0.35, 0.7)
        colour = ROOF_PALETTE[rng.integers(len(ROOF_PALETTE))] * rng.uniform(0.8, 1.15)
        ys, xs = np.nonzero(roof)
        if len(ys) == 0:
            continue
        # gable: one side of the long axis darker
        nx, ny = -math.sin(math.radians(angle)), math.cos(math.radians(angle))
        side = ((xs - cx) * nx + (ys - cy) * ny) > 0
        shade = np.where(side, 1.0 if large else rng.uniform(0.7, 1.0), 1.0)
        if rng.random() < 0.4:  # ribs of colour-steel sheet or tile rows
            period = rng.uniform(2, 5)
            along = (xs - cx) * math.cos(math.radians(angle)) + (ys - cy) * math.sin(math.radians(angle))
            shade = shade * (1 + 0.12 * np.sign(np.sin(along * 2 * np.pi / period)))
        texture = 1 + rng.normal(0, 0.04, len(ys))
        out[ys, xs] = colour[None, :] * (shade * texture)[:, None]
        rim = cv2.morphologyEx(roof, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) & roof
        out[rim > 0] *= rng.uniform(0.6, 0.95)
        label |= roof
    return np.clip(out, 0, 255).astype(np.uint8), label


def distract(image: np.ndarray, rng: np.random.Generator, px_per_m: float) -> np.ndarray:
    """Unlabelled changes: a patch of ground or vegetation changes colour, as fields and lawns do; a new road."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):
        blob = np.zeros((h, w), np.uint8)
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(5, 40) * px_per_m), int(rng.uniform(5, 40) * px_per_m))
        cv2.ellipse(blob, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
        blob = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), 3) > 0.5
        tint = np.float32(rng.choice([(70, 110, 55), (120, 110, 80), (160, 140, 110), (60, 80, 50)]))
        alpha = rng.uniform(0.4, 0.9)
        out[blob] = out[blob] * (1 - alpha) + tint * alpha
    if rng.random() < 0.35:  # a new road or paved yard: long, flat, grey; built with houses but never labelled
        points = np.cumsum(rng.uniform(-1, 1, (4, 2)) * np.float32([w, h]) * 0.6, axis=0) + rng.uniform(0, 1, 2) * (w, h)
        width = max(2, int(rng.uniform(4, 10) * px_per_m))
        road = np.zeros((h, w), np.uint8)
        cv2.polylines(road, [np.round(points).astype(np.int32)], False, 1, width)
        tone = np.float32(rng.choice([(95, 95, 98), (140, 138, 132), (180, 176, 168), (150, 120, 90)]))
        out[road > 0] = tone * (1 + rng.normal(0, 0.03, (int(road.sum()), 1)))
    return np.clip(out, 0, 255).astype(np.uint8)


def augment_geometry(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def building_instances(units) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every labelled changed building of the training units that exists in the after image, as
    ``(RGB patch, mask)`` with a margin of context: the material for copy-paste pairs.

    Regions of the size of one to a few buildings only (DSIFN's coarse blocks of whole sites are not one
    thing that can be moved elsewhere).
    """
    out = []
    for _, _, _, after, label in units:
        count, regions, stats, _ = cv2.connectedComponentsWithStats(label, connectivity=8)
        for k in range(1, count):
            x, y, w, h, area = stats[k]
            if area < 40 or max(w, h) > 140 or area < 0.3 * w * h:
                continue
            pad = 4
            y0, x0 = max(0, y - pad), max(0, x - pad)
            y1, x1 = min(label.shape[0], y + h + pad), min(label.shape[1], x + w + pad)
            out.append((after[y0:y1, x0:x1].copy(), (regions[y0:y1, x0:x1] == k).astype(np.uint8)))
    return out


def _random_instance(instances, rng: np.random.Generator, size: tuple[int, int] | None = None):
    """One building of ``instances`` turned, mirrored and rescaled a little (or to ``size``): (patch, mask)."""
    patch, mask = instances[int(rng.integers(len(instances)))]
    k = int(rng.integers(4))
    patch, mask = np.rot90(patch, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        patch, mask = patch[:, ::-1], mask[:, ::-1]
    if size is None:
        zoom = float(np.exp(rng.uniform(-0.2, 0.2)))
        size = (max(4, round(patch.shape[1] * zoom)), max(4, round(patch.shape[0] * zoom)))
    patch = cv2.resize(np.ascontiguousarray(patch), size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return patch, cv2.resize(np.ascontiguousarray(mask), size, interpolation=cv2.INTER_NEAREST)


def _blend(image: np.ndarray, region, patch: np.ndarray, mask: np.ndarray) -> None:
    """Blend ``patch`` into ``image[region]`` (float32) through a feathered mask two pixels wider than the
    roof, so its shadow edge and eaves come along."""
    alpha = cv2.GaussianBlur(cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(np.float32), (0, 0), 1.0)[..., None]
    image[region] = image[region] * (1 - alpha) + patch * alpha


def add_storey(patch: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rooftop addition on a building: ``patch`` (float32) with a box of new roof drawn inside ``mask``,
    aligned with the building, and the box's mask. What a street office sees most on old roofs: a room or
    a sheet-roofed shed built on top, often in a colour close to the roof's own."""
    points = cv2.findNonZero(mask)
    if points is None or len(points) < 30:
        return patch, np.zeros_like(mask)
    (cx, cy), (w, h), angle = cv2.minAreaRect(points)
    size = (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7))
    centre = (cx + rng.uniform(-0.25, 0.25) * w, cy + rng.uniform(-0.25, 0.25) * h)
    box = np.zeros_like(mask)
    cv2.fillPoly(box, [np.round(cv2.boxPoints((centre, size, angle))).astype(np.int32)], 1)
    box &= cv2.erode(mask, np.ones((3, 3), np.uint8))
    if box.sum() < 12:
        return patch, np.zeros_like(mask)
    roof = patch[mask > 0].mean(axis=0)
    colour = ROOF_PALETTE[rng.integers(len(ROOF_PALETTE))] if rng.random() < 0.6 else roof
    colour = colour * rng.uniform(0.75, 1.25, 3)  # near the roof's own colour 40 % of the time
    out = patch.copy()
    inside = box > 0
    out[inside] = colour * (1 + rng.normal(0, 0.04, (int(inside.sum()), 1)))
    rim = cv2.morphologyEx(box, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[rim & (mask > 0)] *= rng.uniform(0.55, 0.9)  # its walls and the shadow at its foot
    return np.clip(out, 0, 255), box


def paste_instances(after: np.ndarray, label: np.ndarray, instances, rng: np.random.Generator, count: int, *,
                    before: np.ndarray | None = None, replaced: float = 0.0, extended: float = 0.0):
    """``after`` with ``count`` real buildings pasted where ``label`` is clear: ``(after, label, before)``.

    Without ``before`` the buildings are new, and labelled. With it they go onto both dates (present on
    both: not change), except that with probability ``replaced`` the after date gets another building of
    the same extent in its place (rebuilt, labelled over both footprints), and with probability
    ``extended`` the same building with a rooftop addition (:func:`add_storey`, the addition labelled).
    """
    out = after.astype(np.float32)
    old = None if before is None else before.astype(np.float32)
    label = label.copy()
    h, w = after.shape[:2]
    for _ in range(count):
        patch, mask = _random_instance(instances, rng)
        ph, pw = mask.shape
        if ph >= h or pw >= w:
            continue
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        region = (slice(y, y + ph), slice(x, x + pw))
        if label[region][mask > 0].any():
            continue  # keep pasted buildings off labelled ones, so every label region stays one building
        if old is None:
            _blend(out, region, patch, mask)
            label[region] |= mask
            continue
        _blend(old, region, patch, mask)
        outcome = rng.random()
        if outcome < replaced:
            patch_new, mask_new = _random_instance(instances, rng, size=(pw, ph))
            _blend(out, region, patch_new, mask_new)
            label[region] |= mask | mask_new
        elif outcome < replaced + extended:
            patch_new, addition = add_storey(patch, mask, rng)
            _blend(out, region, patch_new, mask)
            label[region] |= addition
        else:
            _blend(out, region, patch, mask)
    pasted = np.clip(out, 0, 255).astype(np.uint8)
    return pasted, label, None if old is None else np.clip(old, 0, 255).astype(np.uint8)


class Sampler:
    """Makes training samples (6 x CROP x CROP input; 2 x CROP x CROP target: change, core) from the pools.

    Kinds of sample, by share:

    * 0.55 real pairs, before and after swapped half the time (the sets label buildings that appear and
      that disappear alike), with real buildings of other pairs pasted in half the time;
    * 0.25 one real image on two "days" with real buildings pasted on the later one (and some on both:
      those are not change, unless the later one has another building in its place) or procedural roofs
      drawn in, plus unlabelled distractors;
    * 0.05 one real image on two days, nothing changed;
    * 0.15 synthetic demo-street surveys.
    """

    def __init__(self, real, synthetic, rng: np.random.Generator) -> None:
        self.real, self.synthetic, self.rng = real, synthetic, rng
        # real sets weigh by set, not by pixels, so one 1024 px pair is not drowned by sixteen 256 px ones
        self.by_set: dict[str, list] = {}
        for set_name, _, a, b, lab in real:
            self.by_set.setdefault(set_name, []).append((a, b, lab))
        self.instances = building_instances(real)

    def _window(self, shape, scale):
        """A random square window of the image that becomes CROP working pixels at ``scale``."""
        rng = self.rng
        h, w = shape[:2]
        side = math.ceil(CROP / scale)
        side = min(side, h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return slice(y, y + side), slice(x, x + side)

    def _resize(self, images, label, scale):
        """A window at ``scale``, as a CROP x CROP training sample.

        A window smaller than the crop at that scale (a 256 px unit is 128 working pixels) is reduced at
        the true scale and mirrored out to the crop, as inference mirrors an image's edges. Stretching it
        to the crop instead, as this did until 2026-12-06, showed the network the 256 px sets' buildings
        a quarter larger than it meets them at inference.
        """
        h, w = label.shape[:2]
        size = (min(CROP, max(8, round(w * scale))), min(CROP, max(8, round(h * scale))))
        interp = cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR
        out = [cv2.resize(np.ascontiguousarray(im), size, interpolation=interp) for im in images]
        lab = cv2.resize(label.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        if size != (CROP, CROP):
            top, left = int(self.rng.integers(0, CROP - size[1] + 1)), int(self.rng.integers(0, CROP - size[0] + 1))
            pad = (top, CROP - size[1] - top, left, CROP - size[0] - left)
            out = [cv2.copyMakeBorder(im, *pad, cv2.BORDER_REFLECT_101) for im in out]
            lab = cv2.copyMakeBorder(lab, *pad, cv2.BORDER_REFLECT_101)
        return out, lab

    def sample(self):
        rng = self.rng
        kind = rng.random()
        scale = (1.0 / STEP) * math.exp(rng.uniform(-0.35, 0.35))
        if kind < 0.55 and self.by_set:
            pairs = self.by_set[list(self.by_set)[int(rng.integers(len(self.by_set)))]]
            before, after, label = pairs[int(rng.integers(len(pairs)))]
            window = self._window(before.shape, scale)
            b, a, lab = before[window], after[window], label[window]
            if rng.random() < 0.5:
                b, a = a, b
            if self.instances and rng.random() < 0.5:
                a, lab, _ = paste_instances(a, lab, self.instances, rng, int(rng.integers(1, 4)))
            (b, a), lab = self._resize((b, a), lab, scale)
            a = shift(a, *rng.uniform(-0.75, 0.75, 2))  # residual misregistration, working pixels
            b, a = relight(b, rng, 0.7), relight(a, rng, 0.7)
        elif kind < 0.85 and self.real:
            _, _, x, y, _ = self.real[int(rng.integers(len(self.real)))]
            base = x if rng.random() < 0.5 else y
            window = self._window(base.shape, scale)
            base, lab = base[window], np.zeros(base[window].shape[:2], np.uint8)
            b, a = base, base
            if kind < 0.8:
                if self.instances and rng.random() < 0.6:
                    if rng.random() < 0.4:  # buildings on both dates (not change), some rebuilt or built on
                        a, lab, b = paste_instances(a, lab, self.instances, rng, int(rng.integers(1, 4)), before=b,
                                                    replaced=0.25, extended=0.35)
                    a, lab, _ = paste_instances(a, lab, self.instances, rng, int(rng.integers(0, 5)))
                    (b, a), lab = self._resize((b, a), lab, scale)
                else:
                    (b, a), lab = self._resize((b, a), lab, scale)
                    a, roofs = paste_roofs(a, rng, rng.uniform(0.7, 2.0))  # 0.5-1.4 m per working pixel
                    lab = roofs.astype(np.float32)
                a = distract(a, rng, rng.uniform(0.7, 2.0))
            else:
                (b, a), lab = self._resize((b, a), lab, scale)
            a = shift(a, *rng.uniform(-0.8, 0.8, 2))
            if rng.random() < 0.5:
                b, a = a, b
            b, a = relight(b, rng), relight(a, rng)
        else:
            before, after, label = self.synthetic[int(rng.integers(len(self.synthetic)))]
            scale = 1.0 / STEP * rng.uniform(0.8, 1.25)
            window = self._window(before.shape, scale)
            (b, a), lab = self._resize((before[window], after[window]), label[window], scale)
            a = shift(a, *rng.uniform(-0.75, 0.75, 2))
            b, a = relight(b, rng), relight(a, rng)
        x = encode_pair(b, a, pair_statistics(b, a))
        change = (lab > 0.5).astype(np.float32)
        x, target = augment_geometry([x, np.stack([change, core_target(change)])], rng)
        return x, target

    def batch(self, size: int):
        xs, ys = zip(*(self.sample() for _ in range(size)))
        return np.stack(xs), np.stack(ys)


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


def build_model():
    """The siamese U-Net.

    Shared encoder over each date: five levels (:data:`CHANNELS`) of a strided and a plain 3 x 3 convolution,
    so the finest features are at half the working scale (a plain U-Net spends most of its time at full scale).
    Each level's features of both dates and their absolute difference are fused by a 1 x 1 convolution.
    The decoder is additive (as in a feature pyramid): the coarser map is projected to the finer level's
    width, upsampled and added, then one 3 x 3 convolution; about a third of the work of concatenating.
    The two output maps are upsampled back to the working scale inside the graph.
    """
    import torch
    from torch import nn

    def conv(cin, cout, stride=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    def pointwise(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class ChangeNet(nn.Module):
        def __init__(self, c=CHANNELS):
            super().__init__()
            self.enc = nn.ModuleList(
                [nn.Sequential(conv(3 if i == 0 else c[i - 1], c[i], 2), conv(c[i], c[i])) for i in range(len(c))]
            )
            self.fuse = nn.ModuleList([pointwise(3 * ci, ci) for ci in c])
            self.lateral = nn.ModuleList([pointwise(c[i + 1], c[i]) for i in range(len(c) - 1)])
            self.dec = nn.ModuleList([conv(c[i], c[i]) for i in range(len(c) - 1)])
            self.head = nn.Conv2d(c[0], 2, 1)  # change, object core
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

        def encode(self, x):
            feats = []
            for layer in self.enc:
                x = layer(x)
                feats.append(x)
            return feats

        def forward(self, x):
            fa, fb = self.encode(x[:, :3]), self.encode(x[:, 3:])
            fused = [f(torch.cat([a, b, torch.abs(a - b)], 1)) for f, a, b in zip(self.fuse, fa, fb)]
            y = fused[-1]
            for i in range(len(fused) - 2, -1, -1):
                y = self.dec[i](self.up(self.lateral[i](y)) + fused[i])
            return self.up(self.head(y))

    return ChangeNet()


def train(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    real, _ = split_units(real_units(), args.holdout, args.fold)
    synthetic = synthetic_pairs(args.synthetic, args.seed)
    sampler = Sampler(real, synthetic, rng)
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    bce = torch.nn.BCEWithLogitsLoss()
    # the exported model is an exponential moving average of the weights (and BatchNorm statistics):
    # with 20 labelled units the last steps' weights follow the last batches; the average generalises better
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True)
    start = time.time()
    model.train()
    running = 0.0
    for step in range(steps):
        x, y = sampler.batch(args.batch)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        logits = model(x)
        p = torch.sigmoid(logits)
        overlap, total = (p * y).sum(dim=(0, 2, 3)), (p + y).sum(dim=(0, 2, 3))
        dice = 1 - (2 * overlap + 1) / (total + 1)  # per output: change, core
        loss = bce(logits[:, :1], y[:, :1]) + dice[0] + 0.5 * (bce(logits[:, 1:], y[:, 1:]) + dice[1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        ema.update_parameters(model)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}/{steps}  loss {running:.4f}  {time.time() - start:6.0f} s", flush=True)
    model = ema.module
    model.eval()
    return {"model": model, "params": params, "seconds": time.time() - start, "real_units": len(real),
            "sampler": sampler}


CALIBRATION_SAMPLES = 64


def export(model, sampler: Sampler, out: Path) -> tuple[Path, dict]:
    """The model as ONNX with 8-bit weights and activations (``out/change_net.onnx``), and the
    quantisation of its two inputs (:func:`uint8_inputs`).

    Static quantisation (QDQ, per-channel weights) calibrated on :data:`CALIBRATION_SAMPLES` training
    samples: onnxruntime runs it about twice as fast as the float model. Every figure this script reports
    is the quantised model's.
    """
    import tempfile

    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = CALIBRATION_SAMPLES

        def get_next(self):
            if not self.left:
                return None
            self.left -= 1
            return {"pair": sampler.batch(1)[0]}

    out.mkdir(parents=True, exist_ok=True)
    path = out / "change_net.onnx"
    with tempfile.TemporaryDirectory() as scratch:
        float_path, prepared = Path(scratch) / "float.onnx", Path(scratch) / "prepared.onnx"
        torch.onnx.export(
            model, torch.zeros(1, 6, 64, 64), str(float_path), dynamo=False, opset_version=17,
            input_names=["pair"], output_names=["logits"],
            dynamic_axes={"pair": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
            do_constant_folding=True,
        )
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(path), Calibration(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return path, uint8_inputs(path)


def uint8_inputs(path: Path) -> dict:
    """Rewrite a quantised model (in place) to take each date as 8-bit NHWC rather than the float ``pair``;
    returns each input's quantisation, ``{"before": [scale, zero point], "after": [...]}``.

    The quantised graph only slices ``pair`` into the two dates and quantises each: the detector does that
    quantisation with a 256-entry table per channel on the 8-bit Lab image it already has (the same float32
    arithmetic, so the same maps to the last bit), which spares the float planes, the graph's quantisation
    and its layout change: 3-6 % of the detector's time. Each date enters as ``Transpose`` to NCHW, which
    onnxruntime cancels against its own to NHWC.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    slices = [n for n in graph.node if n.op_type == "Slice" and n.input[0] == "pair"]
    if len(slices) != 2:
        raise ValueError(f"{path}: expected the input 'pair' sliced into two dates, found {len(slices)} slices")
    quantisation, remove, inputs = {}, [], []
    for piece in slices:
        start = int(numpy_helper.to_array(constants[piece.input[1]]).ravel()[0])
        name = {0: "before", 3: "after"}[start]
        (quantise,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == piece.output[0]]
        scale, zero_point = (numpy_helper.to_array(constants[quantise.input[k]]) for k in (1, 2))
        quantisation[name] = [float(scale), int(zero_point)]
        for node in graph.node:
            node.input[:] = [f"{name}_nchw" if i == quantise.output[0] else i for i in node.input]
        inputs.append(helper.make_node("Transpose", [name], [f"{name}_nchw"], perm=[0, 3, 1, 2], name=f"{name}_nchw"))
        remove += [piece, quantise]
    for node in remove:
        graph.node.remove(node)
    for node in reversed(inputs):
        graph.node.insert(0, node)
    del graph.input[:]
    graph.input.extend(helper.make_tensor_value_info(name, TensorProto.UINT8, [1, "height", "width", 3])
                       for name in ("before", "after"))
    used = {i for n in graph.node for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {name: quantisation[name] for name in ("before", "after")}


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def score_units(model_path: Path, units) -> tuple[dict, dict]:
    """Pixel and object figures of learned, classical (building-cva) and baseline on ``units``, per set and pooled."""
    from inspection.change import get_detector
    from inspection.evaluate import COUNT_KEYS
    from inspection.learned import LearnedChangeDetector, _load

    _load.cache_clear()
    detectors = {"learned": LearnedChangeDetector(model_path=str(model_path)),
                 "classical": get_detector("building-cva"), "baseline": get_detector("baseline")}
    per_set: dict = {}
    pooled = {name: dict.fromkeys(COUNT_KEYS, 0) for name in detectors}
    for set_name, _, before, after, label in units:
        per = per_set.setdefault(set_name, {name: dict.fromkeys(COUNT_KEYS, 0) for name in detectors})
        for name, det in detectors.items():
            counts = score_pair(det.detect(before, after).mask, label > 0)
            for acc in (per[name], pooled[name]):
                for key in COUNT_KEYS:
                    acc[key] += counts[key]
    results = {set_name: {name: _figures(c) for name, c in per.items()} for set_name, per in per_set.items()}
    if len(per_set) > 1:
        results["pooled"] = {name: _figures(pooled[name]) for name in detectors}
    return results, pooled


def save_maps(model_path: Path, units, target: Path) -> None:
    """The held-out units' change and core maps (working scale) with their labels, for choosing thresholds."""
    from inspection.change import estimate_shift
    from inspection.learned import LearnedChangeDetector

    detector = LearnedChangeDetector(model_path=str(model_path))
    arrays = {}
    for i, (set_name, name, before, after, label) in enumerate(units):
        prob, core = detector.maps(before, after, estimate_shift(before, after))
        arrays[f"{i}:prob"], arrays[f"{i}:core"], arrays[f"{i}:label"] = prob, core, label
        arrays[f"{i}:set"] = np.array(set_name)
    np.savez_compressed(target, **arrays)


def load_maps(paths) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for path in paths:
        with np.load(path) as data:
            for i in range(len(data.files) // 4):
                out.append((str(data[f"{i}:set"]), data[f"{i}:prob"], data[f"{i}:core"], data[f"{i}:label"]))
    return out


def scan_thresholds(model_path: Path, maps, thresholds, core_thresholds) -> list[dict]:
    """Pooled figures of every (threshold, core threshold) on held-out maps, post-processed as ``detect`` does."""
    from inspection.evaluate import COUNT_KEYS
    from inspection.learned import LearnedChangeDetector, _load

    _load.cache_clear()
    rows = []
    for t in thresholds:
        for c in core_thresholds:
            detector = LearnedChangeDetector(model_path=str(model_path), threshold=t, core_threshold=c)
            pooled = dict.fromkeys(COUNT_KEYS, 0)
            for _, prob, core, label in maps:
                counts = score_pair(detector.result_from_maps(prob, core, label.shape).mask, label > 0)
                for key in COUNT_KEYS:
                    pooled[key] += counts[key]
            rows.append({"threshold": t, "core_threshold": c, **_figures(pooled)})
    return rows


#: The ratios a figures record keeps, in the order the tables print them.
FIGURE_RATIOS = ("pixel_precision", "pixel_recall", "pixel_f1", "iou", "object_precision", "object_recall")
#: The counts a figures record keeps beside its ratios (all of ``evaluate.COUNT_KEYS`` but the true negatives),
#: so that records of folds can be summed into pooled ones.
FIGURE_COUNTS = ("tp", "fp", "fn", "label_objects", "found_objects", "pred_objects", "correct_objects")


def _figures(counts: dict) -> dict:
    m = metrics(counts)
    return {k: (None if m[k] != m[k] else round(float(m[k]), 4)) for k in FIGURE_RATIOS} | {
        k: int(counts[k]) for k in FIGURE_COUNTS
    }


def print_table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"{'set':10s} {'detector':9s} {'P':>6s} {'R':>6s} {'F1':>6s} {'IoU':>6s} {'objP':>6s} {'objR':>6s}")
    for set_name, by_det in results.items():
        for name, f in by_det.items():
            cells = [f[k] for k in FIGURE_RATIOS]
            print(f"{set_name:10s} {name:9s} " + " ".join("     -" if c is None else f"{c:6.3f}" for c in cells))


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------


DATA_SUMMARY = ("real pairs (augmented, A/B swapped, half with real buildings of other units pasted in; "
                "pairs of 512 px and more as quadrants; units smaller than the crop mirrored out, not stretched), "
                "relit real images with pasted real buildings (some on both dates, some of those rebuilt or given "
                "a rooftop addition) or procedural roofs (some halls of 40-140 m), unlabelled new roads and "
                "ground, no-change relit copies, demo-street synthetic surveys at 0.2-0.6 m; EMA of the weights")


INPUT_DESCRIPTION = (
    "before and after, each 1 x H x W x 3 uint8: standardised CIE Lab (OpenCV 8-bit scaling; after matched to "
    "before's Lab moments; see inspection.learned.pair_statistics/encode_pair) quantised with that input's "
    "input_quantization [scale, zero point]")


def run_one(args) -> dict:
    out = Path(args.out)
    trained = train(args)
    path, input_quantisation = export(trained["model"], trained["sampler"], out)
    holdout, fold = args.holdout, args.fold
    info = {
        "format": MODEL_FORMAT,
        "input": INPUT_DESCRIPTION,
        "input_quantization": input_quantisation,
        "output": "2 x H x W logits at the working scale: change, then object core (see core_target)",
        "step": STEP,
        "scale": 1.0 / STEP,
        "multiple": 2 ** len(CHANNELS),
        "threshold": 0.5,
        "core_threshold": 0.5,
        "architecture": f"siamese U-Net, encoder channels {list(CHANNELS)} from a stride-2 stem, |a-b| fusion, "
                        "additive decoder, two output maps; quantised to 8 bits (QDQ, per-channel weights)",
        "parameters": trained["params"],
        "training": {
            "script": "scripts/train_change_model.py",
            "seed": args.seed, "steps": args.steps, "batch": args.batch, "crop": CROP,
            "real_sets": sorted({s for s in SETS if s != holdout}),
            "real_units": trained["real_units"],
            "holdout": holdout,
            "fold": None if fold is None else f"{fold[0]}/{fold[1]}",
            "synthetic_scenes": args.synthetic,
            "data": DATA_SUMMARY,
            "seconds": round(trained["seconds"], 1),
            "date": dt.date.today().isoformat(),
        },
    }
    meta = out / "change_net.json"
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")  # the detector reads it to score
    training, validation = split_units(real_units(), holdout, fold)
    held_out = holdout is not None or fold is not None
    results, pooled_counts = score_units(path, validation if held_out else training)
    if held_out:
        title = f"held-out units ({holdout or f'fold {fold[0]} of {fold[1]}'}; trained without them)"
    else:
        title = "training fit (all units were trained on)"
    print_table(title, results)
    if held_out:
        save_maps(path, validation, out / "held_out_maps.npz")
    info["scores"] = {"held_out" if held_out else "training_fit": results}
    info["pooled_counts"] = pooled_counts
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def fold_runs(scheme: str, k: int) -> list[tuple[list[str], str]]:
    """Each fold of a validation scheme: its command-line arguments and its folder name."""
    if scheme == "leave_one_set_out":
        return [(["--holdout", s], s) for s in SETS]
    return [(["--fold", f"{i}/{k}"], f"fold-{i}") for i in range(k)]


def run_folds(args, scheme: str) -> None:
    """The folds and the model on all data, ``--jobs`` at a time (threads shared out), then the merge."""
    work = Path(args.folds_dir) / scheme
    work.mkdir(parents=True, exist_ok=True)
    threads = max(1, args.threads // args.jobs)
    tasks = [([*extra, "--out", str(work / name)], work / f"{name}.log") for extra, name in fold_runs(scheme, args.k)]
    tasks.append((["--out", str(args.out)], work / "all.log"))
    procs: list[subprocess.Popen] = []
    start = time.time()
    for extra, log_path in tasks:
        while len([p for p in procs if p.poll() is None]) >= args.jobs:
            time.sleep(2)
        cmd = [sys.executable, __file__, *extra, "--threads", str(threads), "--steps", str(args.steps),
               "--seed", str(args.seed), "--batch", str(args.batch), "--synthetic", str(args.synthetic)]
        print("running", " ".join(cmd[1:]), f"(log {log_path})", flush=True)
        procs.append(subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a run failed: {p.args}")
    print(f"all runs done in {time.time() - start:.0f} s")
    print((work / "all.log").read_text().split("\n\n", 1)[-1])
    merge_folds(Path(args.out), work, scheme, args.k)


#: Thresholds tried on the held-out maps (change, core); the pair with the best pooled F1 + object recall
#: goes into the shipped model's metadata.
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)
CORE_THRESHOLDS = (0.3, 0.5, 0.7)


def merge_folds(out: Path, work: Path, scheme: str, k: int) -> None:
    """Choose the thresholds on the folds' held-out maps and add the held-out figures, per set and pooled
    over folds, to the shipped model's metadata (learned at the chosen thresholds, classical and baseline
    as each fold scored them)."""
    from inspection.evaluate import COUNT_KEYS
    from inspection.learned import LearnedChangeDetector, _load

    info = json.loads((out / "change_net.json").read_text())
    names = [name for _, name in fold_runs(scheme, k)]
    maps = load_maps([work / name / "held_out_maps.npz" for name in names])
    scan = scan_thresholds(out / "change_net.onnx", maps, THRESHOLDS, CORE_THRESHOLDS)
    best = max(scan, key=lambda row: (row["pixel_f1"] or 0.0) + (row["object_recall"] or 0.0))
    counts: dict = {}
    for name in names:
        fold = json.loads((work / name / "change_net.json").read_text())
        for set_name, by_det in fold["scores"]["held_out"].items():
            for det, figures in by_det.items():
                if set_name == "pooled" or det == "learned":
                    continue
                acc = counts.setdefault(set_name, {}).setdefault(det, dict.fromkeys(COUNT_KEYS, 0))
                for key in FIGURE_COUNTS:
                    acc[key] += figures[key]
    _load.cache_clear()
    detector = LearnedChangeDetector(model_path=str(out / "change_net.onnx"), threshold=best["threshold"],
                                     core_threshold=best["core_threshold"])
    for set_name, prob, core, label in maps:
        acc = counts.setdefault(set_name, {}).setdefault("learned", dict.fromkeys(COUNT_KEYS, 0))
        found = score_pair(detector.result_from_maps(prob, core, label.shape).mask, label > 0)
        for key in COUNT_KEYS:
            acc[key] += found[key]
    order = ("learned", "classical", "baseline")
    results = {set_name: {det: _figures(by_det[det]) for det in order if det in by_det}
               for set_name, by_det in sorted(counts.items())}
    pooled = {}
    for by_det in counts.values():
        for det, acc in by_det.items():
            total = pooled.setdefault(det, dict.fromkeys(COUNT_KEYS, 0))
            for key in COUNT_KEYS:
                total[key] += acc[key]
    results["pooled over folds"] = {det: _figures(pooled[det]) for det in order if det in pooled}
    info["threshold"], info["core_threshold"] = best["threshold"], best["core_threshold"]
    info["scores"][scheme] = results
    info["threshold_scan"] = {"scheme": scheme, "rows": scan}
    (out / "change_net.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"thresholds chosen on the held-out maps: change {best['threshold']}, core {best['core_threshold']}")
    print_table(f"{scheme.replace('_', ' ')} (each unit scored by the model trained without it)", results)


def _fold(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N with 0 <= K < N, e.g. 0/3")
    return int(k), int(n)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", choices=SETS, help="train without this real set and score on it")
    parser.add_argument("--fold", type=_fold, help="K/N: train without every N-th unit of each set from the K-th, score on them")
    parser.add_argument("--out", default=str(ROOT / "inspection" / "models"), help="folder for change_net.onnx/.json")
    parser.add_argument("--kfold", action="store_true", help="run --k folds over units, then train on all data")
    parser.add_argument("--loso", action="store_true", help="run the three leave-one-set-out folds, then train on all data")
    parser.add_argument("--k", type=int, default=3, help="folds under --kfold")
    parser.add_argument("--folds-dir", default="/tmp/gridmap-change-folds", help="where --kfold/--loso keep the folds")
    parser.add_argument("--merge-only", choices=("kfold", "loso"), help="only merge fold results from --folds-dir into --out")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once under --kfold/--loso")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--synthetic", type=int, default=12, help="synthetic demo-street scenes")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    schemes = {"kfold": "k_fold", "loso": "leave_one_set_out"}
    if args.merge_only:
        scheme = schemes[args.merge_only]
        merge_folds(Path(args.out), Path(args.folds_dir) / scheme, scheme, args.k)
    elif args.kfold or args.loso:
        if args.kfold and args.loso:
            parser.error("--kfold and --loso exclude each other; run them one after the other")
        if args.holdout or args.fold:
            parser.error("--kfold/--loso choose their own held-out units")
        run_folds(args, schemes["kfold" if args.kfold else "loso"])
    else:
        if args.holdout and args.fold:
            parser.error("--holdout and --fold exclude each other")
        run_one(args)


if __name__ == "__main__":
    main()
