#!/usr/bin/env python
"""Train the ``learned`` change detector and export it to ONNX (``inspection/models/change_net.*``).

Training data, built here, deterministically from ``--seed``:

* the labelled real pairs in ``../shared/data/changes`` (or ``$GRIDMAP_SHARED_DATA/changes``), less the
  ``--holdout`` set, with heavy augmentation: scale, flips and quarter turns, a sub-pixel shift of the after
  image, independent colour, gain, gamma, blur and noise for each date;
* "pasted roof" pairs: a real image of a training set against a re-lit copy of itself with procedural
  roofs (rectangles and L shapes, gable shading, a cast shadow, colour-steel blue, white, grey, red,
  brown) drawn in, labelled; plus unlabelled distractors (a lawn or field that changes colour, new shade);
* "no change" pairs: a real image against a re-lit, slightly shifted copy of itself (label empty);
* synthetic surveys of the demo street (:mod:`inspection.synthetic`) at 0.3-0.6 m with their known
  sheds, rooftop additions and rebuilt buildings.

The model: a siamese U-Net (shared encoder 16-24-32-48 channels over each date, fusion of both feature
maps and their absolute difference at each level, a decoder with skips) on standardised Lab at half
resolution; loss BCE + soft Dice; AdamW with a cosine schedule.

Usage::

    python scripts/train_change_model.py --loso          # three leave-one-set-out folds, then the model on all data
    python scripts/train_change_model.py --holdout whu-1024 --out /tmp/fold-whu
    python scripts/train_change_model.py --out inspection/models   # all data, no fold figures

Needs the ``train`` extra (``pip install -e .[train]``: torch and onnx); inference needs neither.
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

from inspection.evaluate import _read_label, _read_rgb, discover_pairs, metrics, score_pair  # noqa: E402
from inspection.learned import encode_pair, pair_statistics  # noqa: E402

SETS = ("dsifn-256", "levir-256", "whu-1024")
STEP = 2  # working scale: half resolution
CROP = 128  # training crop, working-scale pixels
CHANNELS = (16, 24, 32, 48)


def shared_changes() -> Path:
    base = os.environ.get("GRIDMAP_SHARED_DATA") or ROOT.parent / "shared" / "data"
    return Path(base) / "changes"


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def load_real(holdout: str | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    pairs = []
    for set_name, items in discover_pairs(shared_changes()).items():
        if set_name == holdout:
            continue
        for a, b, lab in items:
            pairs.append((set_name, _read_rgb(a), _read_rgb(b), _read_label(lab).astype(np.uint8)))
    return pairs


def synthetic_pairs(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Demo-street surveys at 0.3-0.6 m: (before, after, label) rendered in memory."""
    import geopandas as gpd

    from gridmap.demo import METRIC_CRS, generate_demo_street
    from inspection import synthetic as S

    units = generate_demo_street()
    out = []
    for k in range(count):
        rng = np.random.default_rng([seed, 7, k])
        resolution = float(rng.uniform(0.3, 0.6))
        centre = (S.CENTRE[0] + rng.uniform(-0.002, 0.002), S.CENTRE[1] + rng.uniform(-0.002, 0.002))
        scene = S.demo_scene(seed=1000 + k, centre=centre, size_m=220.0, resolution=resolution, units=units)
        before = S.render_survey(scene, seed=2 * k, texture_seed=k)
        truth = S._add_changes(scene, np.random.default_rng([seed, 8, k]), sheds=int(rng.integers(6, 16)),
                               rooftops=int(rng.integers(2, 6)))
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
    """``image`` with 1-6 procedural roofs drawn in (and their shadows), and the roofs' mask."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    label = np.zeros((h, w), np.uint8)
    sun = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(1, 7))):
        length = rng.uniform(5, 35) * px_per_m
        depth = rng.uniform(4, min(20, 35)) * px_per_m
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
        shade = np.where(side, rng.uniform(0.7, 1.0), 1.0)
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
    """Unlabelled changes: a patch of ground or vegetation changes colour, as fields and lawns do."""
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


class Sampler:
    """Makes training samples (6 x CROP x CROP input, 1 x CROP x CROP label) from the pools."""

    def __init__(self, real, synthetic, rng: np.random.Generator) -> None:
        self.real, self.synthetic, self.rng = real, synthetic, rng
        # real sets weigh by set, not by pixels, so one 1024 px pair is not drowned by sixteen 256 px ones
        self.by_set: dict[str, list] = {}
        for set_name, a, b, lab in real:
            self.by_set.setdefault(set_name, []).append((a, b, lab))

    def _crop(self, before, after, label, scale):
        """Random crop that becomes CROP working pixels at ``scale`` (working px per image px)."""
        rng = self.rng
        h, w = before.shape[:2]
        side = int(math.ceil(CROP / scale))
        if side > min(h, w):  # image smaller than the crop: enlarge the scale instead
            scale = CROP / min(h, w)
            side = min(h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crops = [im[y : y + side, x : x + side] for im in (before, after, label)]
        size = (CROP, CROP)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        b = cv2.resize(crops[0], size, interpolation=interp)
        a = cv2.resize(crops[1], size, interpolation=interp)
        lab = cv2.resize(crops[2].astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        return b, a, lab

    def sample(self):
        rng = self.rng
        kind = rng.random()
        scale = (1.0 / STEP) * math.exp(rng.uniform(-0.35, 0.35))
        if kind < 0.45 and self.by_set:
            pairs = self.by_set[list(self.by_set)[int(rng.integers(len(self.by_set)))]]
            before, after, label = pairs[int(rng.integers(len(pairs)))]
            b, a, lab = self._crop(before, after, label, scale)
            a = shift(a, *rng.uniform(-0.75, 0.75, 2))  # residual misregistration, working pixels
            b, a = relight(b, rng, 0.7), relight(a, rng, 0.7)
        elif kind < 0.75 and self.real:
            set_name, x, y, _ = self.real[int(rng.integers(len(self.real)))]
            base = x if rng.random() < 0.5 else y
            b, a, _ = self._crop(base, base, np.zeros(base.shape[:2], np.uint8), scale)
            px_per_m = rng.uniform(0.7, 2.0)  # working-scale pixels per metre (0.5-1.4 m per pixel)
            a = shift(a, *rng.uniform(-0.8, 0.8, 2))
            if rng.random() < 0.2:  # no change at all, only another day
                lab = np.zeros(b.shape[:2], np.float32)
            else:
                a, lab = paste_roofs(a, rng, px_per_m)
                lab = lab.astype(np.float32)
            a = distract(a, rng, px_per_m)
            b, a = relight(b, rng), relight(a, rng)
        else:
            before, after, label = self.synthetic[int(rng.integers(len(self.synthetic)))]
            b, a, lab = self._crop(before, after, label, 1.0 / STEP * rng.uniform(0.8, 1.25))
            a = shift(a, *rng.uniform(-0.75, 0.75, 2))
            b, a = relight(b, rng), relight(a, rng)
        x = encode_pair(b, a, pair_statistics(b, a))
        x, lab = augment_geometry([x, lab[None]], rng)
        return x, (lab > 0.5).astype(np.float32)

    def batch(self, size: int):
        xs, ys = zip(*(self.sample() for _ in range(size)))
        return np.stack(xs), np.stack(ys)


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


def build_model():
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    class ChangeNet(nn.Module):
        def __init__(self, c=CHANNELS):
            super().__init__()
            self.enc = nn.ModuleList([block(3, c[0])] + [block(c[i - 1], c[i]) for i in range(1, len(c))])
            self.fuse = nn.ModuleList([
                nn.Sequential(nn.Conv2d(3 * ci, ci, 1, bias=False), nn.BatchNorm2d(ci), nn.ReLU(inplace=True))
                for ci in c
            ])
            self.dec = nn.ModuleList([block(c[i + 1] + c[i], c[i]) for i in range(len(c) - 1)])
            self.head = nn.Conv2d(c[0], 1, 1)
            self.pool = nn.MaxPool2d(2)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

        def encode(self, x):
            feats = []
            for i, layer in enumerate(self.enc):
                x = layer(x if i == 0 else self.pool(x))
                feats.append(x)
            return feats

        def forward(self, x):
            fa, fb = self.encode(x[:, :3]), self.encode(x[:, 3:])
            fused = [f(torch.cat([a, b, torch.abs(a - b)], 1)) for f, a, b in zip(self.fuse, fa, fb)]
            y = fused[-1]
            for i in range(len(fused) - 2, -1, -1):
                y = self.dec[i](torch.cat([self.up(y), fused[i]], 1))
            return self.head(y)

    return ChangeNet()


def train(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    real = load_real(args.holdout)
    synthetic = synthetic_pairs(args.synthetic, args.seed)
    sampler = Sampler(real, synthetic, rng)
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    bce = torch.nn.BCEWithLogitsLoss()
    start = time.time()
    model.train()
    running = 0.0
    for step in range(steps):
        x, y = sampler.batch(args.batch)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        logits = model(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = bce(logits, y) + dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}/{steps}  loss {running:.4f}  {time.time() - start:6.0f} s", flush=True)
    model.eval()
    return {"model": model, "params": params, "seconds": time.time() - start, "real_pairs": len(real)}


def export(model, out: Path) -> Path:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    path = out / "change_net.onnx"
    dummy = torch.zeros(1, 6, 64, 64)
    torch.onnx.export(
        model, dummy, str(path), dynamo=False, opset_version=17, input_names=["pair"], output_names=["logits"],
        dynamic_axes={"pair": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
        do_constant_folding=True,
    )
    return path


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def score_sets(model_path: Path, sets: list[str]) -> dict:
    """Pixel and object figures of learned, default and baseline on ``sets`` (per set and pooled)."""
    from inspection.change import get_detector
    from inspection.evaluate import COUNT_KEYS
    from inspection.learned import LearnedChangeDetector, _load

    _load.cache_clear()
    detectors = {"learned": LearnedChangeDetector(model_path=str(model_path)),
                 "default": get_detector("default"), "baseline": get_detector("baseline")}
    pairs = discover_pairs(shared_changes())
    results: dict = {}
    pooled = {name: dict.fromkeys(COUNT_KEYS, 0) for name in detectors}
    for set_name in sets:
        per = {name: dict.fromkeys(COUNT_KEYS, 0) for name in detectors}
        for a, b, lab in pairs[set_name]:
            before, after, label = _read_rgb(a), _read_rgb(b), _read_label(lab)
            for name, det in detectors.items():
                counts = score_pair(det.detect(before, after).mask, label)
                for acc in (per[name], pooled[name]):
                    for key in COUNT_KEYS:
                        acc[key] += counts[key]
        results[set_name] = {name: _figures(per[name]) for name in detectors}
    if len(sets) > 1:
        results["pooled"] = {name: _figures(pooled[name]) for name in detectors}
    return results, pooled


def _figures(counts: dict) -> dict:
    m = metrics(counts)
    keep = ("pixel_precision", "pixel_recall", "pixel_f1", "iou", "object_recall")
    return {k: (None if m[k] != m[k] else round(float(m[k]), 4)) for k in keep} | {
        k: int(counts[k]) for k in ("tp", "fp", "fn", "label_objects", "found_objects")
    }


def print_table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"{'set':10s} {'detector':9s} {'P':>6s} {'R':>6s} {'F1':>6s} {'IoU':>6s} {'objR':>6s}")
    for set_name, by_det in results.items():
        for name, f in by_det.items():
            cells = [f[k] for k in ("pixel_precision", "pixel_recall", "pixel_f1", "iou", "object_recall")]
            print(f"{set_name:10s} {name:9s} " + " ".join("     -" if c is None else f"{c:6.3f}" for c in cells))


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------


def run_one(args) -> dict:
    out = Path(args.out)
    trained = train(args)
    path = export(trained["model"], out)
    holdout = args.holdout
    info = {
        "format": "gridmap change_net 1",
        "input": "6 x H x W float32: standardised CIE Lab (OpenCV 8-bit scaling) of before, then of after; "
                 "after matched to before's Lab moments; see inspection.learned.pair_statistics/encode_pair",
        "output": "1 x H x W change logits at the working scale",
        "step": STEP,
        "scale": 1.0 / STEP,
        "threshold": 0.5,
        "architecture": f"siamese U-Net, encoder channels {list(CHANNELS)}, |a-b| fusion, bilinear decoder",
        "parameters": trained["params"],
        "training": {
            "script": "scripts/train_change_model.py",
            "seed": args.seed, "steps": args.steps, "batch": args.batch, "crop": CROP,
            "real_sets": sorted({s for s in SETS if s != holdout}),
            "real_pairs": trained["real_pairs"],
            "holdout": holdout,
            "synthetic_scenes": args.synthetic,
            "data": "real pairs (augmented), pasted procedural roofs on real training images, "
                    "no-change relit copies, demo-street synthetic surveys at 0.3-0.6 m",
            "seconds": round(trained["seconds"], 1),
            "date": dt.date.today().isoformat(),
        },
    }
    meta = out / "change_net.json"
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")  # the detector reads it to score
    sets = [holdout] if holdout else list(discover_pairs(shared_changes()))
    results, pooled_counts = score_sets(path, sets)
    label = f"held-out set {holdout} (trained without it)" if holdout else "training fit (all sets were trained on)"
    print_table(label, results)
    info["scores"] = {"holdout" if holdout else "training_fit": results}
    info["pooled_counts"] = pooled_counts
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def run_loso(args) -> None:
    """The three folds and the model on all data, ``--jobs`` at a time (threads shared out), then the merge."""
    work = Path(args.loso_dir)
    work.mkdir(parents=True, exist_ok=True)
    threads = max(1, args.threads // args.jobs)
    tasks = [(["--holdout", s, "--out", str(work / s)], work / f"{s}.log") for s in SETS]
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
    merge_folds(Path(args.out), work)


def merge_folds(out: Path, work: Path) -> None:
    from inspection.evaluate import COUNT_KEYS

    info = json.loads((out / "change_net.json").read_text())
    folds, pooled = {}, {}
    for set_name in SETS:
        fold = json.loads((work / set_name / "change_net.json").read_text())
        folds[set_name] = fold["scores"]["holdout"][set_name]
        for name, counts in fold["pooled_counts"].items():
            acc = pooled.setdefault(name, dict.fromkeys(COUNT_KEYS, 0))
            for key in COUNT_KEYS:
                acc[key] += counts[key]
    folds["pooled over folds"] = {name: _figures(c) for name, c in pooled.items()}
    info["scores"]["leave_one_set_out"] = folds
    (out / "change_net.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print_table("leave-one-set-out (each set scored by the model trained without it)", folds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", choices=SETS, help="train without this real set and score on it")
    parser.add_argument("--out", default=str(ROOT / "inspection" / "models"), help="folder for change_net.onnx/.json")
    parser.add_argument("--loso", action="store_true", help="run the three folds, then train on all data")
    parser.add_argument("--loso-dir", default="/tmp/gridmap-change-loso", help="where --loso keeps the folds")
    parser.add_argument("--merge-only", action="store_true", help="only merge fold results from --loso-dir into --out")
    parser.add_argument("--jobs", type=int, default=2, help="folds run at once under --loso")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--synthetic", type=int, default=8, help="synthetic demo-street scenes")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if args.merge_only:
        merge_folds(Path(args.out), Path(args.loso_dir))
    elif args.loso:
        if args.holdout:
            parser.error("--loso and --holdout exclude each other")
        run_loso(args)
    else:
        run_one(args)


if __name__ == "__main__":
    main()
