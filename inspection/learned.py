"""A small learned change detector (``learned``): a siamese U-Net run through OpenCV's DNN module.

The network (about 0.1 M parameters, weights in ``inspection/models/change_net.onnx``) is trained by
``scripts/train_change_model.py`` from the labelled real pairs in ``../shared/data/changes`` and from
synthetic scenes; ``inspection/models/change_net.json`` beside it records how its inputs are prepared, the
scale it works at, its threshold, what it was trained on and its leave-one-set-out scores. Nothing here
imports torch: inference is OpenCV only, on the CPU.

Steps of :meth:`LearnedChangeDetector.detect`:

1. Co-registration (:func:`inspection.change.coregister`), as for the default detector.
2. Global statistics of the pair, from a strided sample of the full images (:func:`pair_statistics`):
   per-channel gain and offset matching ``after``'s CIE Lab moments to ``before``'s (estimated on the
   pixels that look unchanged) and ``before``'s Lab mean and spread, which standardise both images. They
   are computed once per pair, so every tile is normalised alike.
3. Tiled inference at the working scale (half resolution): tiles of ``tile`` x ``tile`` working pixels
   with ``margin`` pixels of real context on each side; only the tile's core is kept, so no pixel of the
   output comes from a tile border, and a 20,000 px image never becomes one huge tensor.
4. Threshold of the change probability, opening and closing, hole filling, a minimum region area, and
   linear upsampling of the mask to full resolution.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from inspection.change import ChangeResult, _fill_holes, check_pair, coregister, register
from inspection.errors import DetectorError

__all__ = ["LearnedChangeDetector", "MODEL_PATH", "pair_statistics", "encode_pair", "load_model_info"]

#: The committed model; its metadata is the same path with ``.json``.
MODEL_PATH = Path(__file__).resolve().parent / "models" / "change_net.onnx"

#: The network's input is padded to a multiple of this (three 2x poolings).
_MULTIPLE = 8

#: Lower bounds of the standardising spread (OpenCV 8-bit Lab units), so a flat image (fresh snow, a
#: lake) is not amplified into noise.
_MIN_SPREAD = np.float32([8.0, 3.0, 3.0])

#: Largest number of pixels sampled for the pair statistics.
_STAT_PIXELS = 1 << 20


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)


def pair_statistics(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-channel normalisation of a pair, as a 4 x 3 float32 array.

    Rows: gain and offset taking ``after``'s Lab to ``before``'s moments (estimated a second time on the
    70 % of pixels that differ least, so a large real change does not drag the colours), then the mean
    and the spread (floored) of ``before``'s Lab. Taken on every k-th pixel of every k-th row, with k
    chosen so that at most about a million pixels are read.
    """
    h, w = before.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / _STAT_PIXELS))))
    sb = np.ascontiguousarray(_lab(np.ascontiguousarray(before[::step, ::step])))
    sa = np.ascontiguousarray(_lab(np.ascontiguousarray(after[::step, ::step])))

    def moments(weights):
        s_mean, s_std = cv2.meanStdDev(sa, mask=weights)
        r_mean, r_std = cv2.meanStdDev(sb, mask=weights)
        s_mean, s_std, r_mean, r_std = (v.ravel().astype(np.float32) for v in (s_mean, s_std, r_mean, r_std))
        gains = np.clip(r_std / np.maximum(s_std, 1e-3), 0.33, 3.0)
        return gains, r_mean - s_mean * gains

    gains, offsets = moments(None)
    diff = np.sqrt((((sa * gains + offsets) - sb) ** 2).sum(axis=2))
    keep = (diff <= np.percentile(diff, 70)).astype(np.uint8)
    if keep.sum() > 0.2 * keep.size:
        gains, offsets = moments(keep)
    mean, std = cv2.meanStdDev(sb)
    spread = np.maximum(std.ravel().astype(np.float32), _MIN_SPREAD)
    return np.stack([gains, offsets, mean.ravel().astype(np.float32), spread]).astype(np.float32)


def encode_pair(before: np.ndarray, after: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """The network input for a (working-scale) pair: float32 6 x H x W, standardised Lab of both images."""
    gains, offsets, mean, spread = stats
    lab_b = (_lab(before) - mean) / spread
    lab_a = (_lab(after) * gains + offsets - mean) / spread
    return np.concatenate([lab_b, lab_a], axis=2).transpose(2, 0, 1).astype(np.float32, copy=False)


def load_model_info(model_path: str | Path = MODEL_PATH) -> dict:
    """The JSON metadata written beside an ONNX model by the training script."""
    path = Path(model_path).with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DetectorError(f"{path}: cannot read the learned detector's metadata ({error})") from None


class _Network:
    """An ONNX network loaded once, with a lock: an OpenCV ``Net`` keeps state between calls."""

    def __init__(self, path: Path) -> None:
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as error:
            raise DetectorError(f"{path}: OpenCV cannot load the change model ({error})") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.lock = threading.Lock()

    def __call__(self, blob: np.ndarray) -> np.ndarray:
        with self.lock:
            self.net.setInput(np.ascontiguousarray(blob[None]))
            out = self.net.forward()
        return np.asarray(out, dtype=np.float32).reshape(blob.shape[1:])


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[_Network, dict]:
    model = Path(path)
    if not model.is_file():
        raise DetectorError(f"{model}: the learned change model is missing (run scripts/train_change_model.py)")
    return _Network(model), load_model_info(model)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


@dataclass(frozen=True, kw_only=True)
class LearnedChangeDetector:
    """The learned detector; see the module docstring for its steps.

    Parameters
    ----------
    model_path : str or None
        ONNX model (its ``.json`` metadata beside it); ``None`` for the committed one.
    threshold : float or None
        Probability above which a pixel is changed; ``None`` for the model's own (from its metadata).
    tile : int
        Side of a tile's core, in working-scale pixels.
    margin : int
        Context added on each side of a tile, working-scale pixels (larger than the half-width over
        which the network looks, so tiling changes the output only by rounding).
    min_area : int
        Smallest region kept, full-resolution pixels.
    register_images : bool
        Co-register before comparing.
    max_shift_px : float
        Largest offset :func:`inspection.change.coregister` believes.
    name : str
        Registry name.
    """

    model_path: str | None = None
    threshold: float | None = None
    tile: int = 512
    margin: int = 48
    min_area: int = 60
    register_images: bool = True
    max_shift_px: float = 20.0
    name: str = "learned"

    def _model(self) -> tuple[_Network, dict]:
        return _load(str(Path(self.model_path) if self.model_path else MODEL_PATH))

    @property
    def info(self) -> dict:
        """The model's metadata (normalisation, scale, threshold, training data, scores)."""
        return self._model()[1]

    def probability(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Change probability at the working scale (float32, about half the input size), for an aligned pair."""
        net, info = self._model()
        step = int(info.get("step", 2))
        h, w = before.shape[:2]
        hs, ws = -(-h // step), -(-w // step)  # ceil: a last odd row still gets a working pixel
        stats = pair_statistics(before, after)
        prob = np.zeros((hs, ws), np.float32)
        tile = max(16, int(self.tile))
        margin = max(0, int(self.margin))
        for y0 in range(0, hs, tile):
            for x0 in range(0, ws, tile):
                y1, x1 = min(y0 + tile, hs), min(x0 + tile, ws)
                # Context around the core, clipped to the image; what is missing is mirrored.
                cy0, cx0 = max(y0 - margin, 0), max(x0 - margin, 0)
                cy1, cx1 = min(y1 + margin, hs), min(x1 + margin, ws)
                sub_b = before[cy0 * step : cy1 * step, cx0 * step : cx1 * step]
                sub_a = after[cy0 * step : cy1 * step, cx0 * step : cx1 * step]
                size = (cx1 - cx0, cy1 - cy0)
                if step > 1:
                    sub_b = cv2.resize(sub_b, size, interpolation=cv2.INTER_AREA)
                    sub_a = cv2.resize(sub_a, size, interpolation=cv2.INTER_AREA)
                blob = encode_pair(sub_b, sub_a, stats).transpose(1, 2, 0)
                top, left = margin - (y0 - cy0), margin - (x0 - cx0)
                bottom = margin - (cy1 - y1)
                right = margin - (cx1 - x1)
                full_h, full_w = (cy1 - cy0) + top + bottom, (cx1 - cx0) + left + right
                bottom += -full_h % _MULTIPLE
                right += -full_w % _MULTIPLE
                blob = _pad(blob, top, bottom, left, right)
                logits = net(np.ascontiguousarray(blob.transpose(2, 0, 1)))
                core = logits[margin : margin + (y1 - y0), margin : margin + (x1 - x0)]
                prob[y0:y1, x0:x1] = _sigmoid(core)
        return prob

    def detect(self, before: np.ndarray, after: np.ndarray) -> ChangeResult:
        check_pair(before, after)
        h, w = before.shape[:2]
        _, info = self._model()
        if self.register_images:
            after, _ = coregister(before, after, max_shift_px=self.max_shift_px)
        prob = self.probability(before, after)
        step = int(info.get("step", 2))
        threshold = float(self.threshold if self.threshold is not None else info.get("threshold", 0.5))
        mask = (prob > threshold).astype(np.uint8)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disk)
        mask = _fill_holes(mask)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= self.min_area / step**2
        keep[0] = False
        mask = keep[labels].astype(np.uint8)
        if step > 1:
            hs, ws = prob.shape
            # Up to the (ceil-rounded) working grid times step, then cut to the image.
            big = (ws * step, hs * step)
            mask = cv2.resize(mask * 255, big, interpolation=cv2.INTER_LINEAR)[:h, :w] > 127
            score = cv2.resize(prob, big, interpolation=cv2.INTER_LINEAR)[:h, :w]
        else:
            mask, score = mask > 0, prob
        return ChangeResult(mask=np.ascontiguousarray(mask), score=np.clip(score, 0.0, 1.0).astype(np.float32))


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Mirror-pad ``image`` (H x W x C float32); repeats the mirror when a side is wider than the image."""
    while top or bottom or left or right:
        h, w = image.shape[:2]
        t, b = min(top, h - 1), min(bottom, h - 1)
        lft, r = min(left, w - 1), min(right, w - 1)
        if h == 1:
            t = b = 0
            image = np.repeat(image, 1 + top + bottom, axis=0)
            top = bottom = 0
        if w == 1:
            lft = r = 0
            image = np.repeat(image, 1 + left + right, axis=1)
            left = right = 0
        image = cv2.copyMakeBorder(image, t, b, lft, r, cv2.BORDER_REFLECT_101)
        top, bottom, left, right = top - t, bottom - b, left - lft, right - r
    return image


register(LearnedChangeDetector())
