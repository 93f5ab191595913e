"""The learned change detector (``learned``, the project's ``default``): a small siamese U-Net run by onnxruntime.

The network (about 0.8 M parameters, weights in ``inspection/models/change_net.onnx``) is trained by
``scripts/train_change_model.py`` from the labelled real pairs in ``../shared/data/changes`` and from
synthetic scenes; ``inspection/models/change_net.json`` beside it records how its inputs are prepared, the
scale it works at, its thresholds, what it was trained on and its scores on pairs held out of training.
The committed model is quantised to 8-bit integers (calibrated on training samples by the same script),
which onnxruntime runs about twice as fast as the float model; the held-out figures are the quantised
model's. Nothing here imports torch: inference is onnxruntime on the CPU.

Steps of :meth:`LearnedChangeDetector.detect`:

1. Co-registration: the offset is estimated as for the classical detector
   (:func:`inspection.change.estimate_shift`) and undone on ``after`` once it is reduced to the working
   scale (a quarter of the resampling).
2. Global statistics of the pair, from a strided sample of the images at the working scale
   (:func:`lab_statistics`):
   per-channel gain and offset matching ``after``'s CIE Lab moments to ``before``'s (estimated on the
   pixels that look unchanged) and ``before``'s Lab mean and spread, which standardise both images. They
   are computed once per pair, so every tile is normalised alike.
3. Tiled inference at the working scale (half resolution; both images are reduced and turned into 8-bit
   Lab once): tiles of ``tile`` x ``tile`` working pixels with ``margin`` pixels of context on each side
   (mirrored at the image's edges); only the tile's core is kept, so no pixel of the output comes from a
   seam between tiles, and a 20,000 px image never becomes one huge float tensor. The network takes each
   date as 8-bit bytes: the standardisation and the model's own input quantisation are one 256-entry table
   per channel (:func:`input_tables`), applied to the Lab bytes of the tile.
4. Threshold of the change probability, opening and closing, hole filling.
5. Splitting into buildings (:func:`split_at_cores`): the network's second map marks each building's core;
   a region holding several cores is cut along the lines halfway between them, so neighbouring new houses
   that the mask joins through a yard become one candidate each.
6. A minimum region area, and linear upsampling of the mask to full resolution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from inspection.change import (
    ChangeResult,
    _fill_holes,
    _regions,
    check_pair,
    estimate_shift,
    register,
    shift_image,
)
from inspection.errors import DetectorError

__all__ = ["MODEL_FORMAT", "MODEL_PATH", "LearnedChangeDetector", "encode_pair", "input_tables", "load_model_info",
           "pair_statistics", "split_at_cores"]

#: The committed model; its metadata is the same path with ``.json``.
MODEL_PATH = Path(__file__).resolve().parent / "models" / "change_net.onnx"

#: Lower bounds of the standardising spread (OpenCV 8-bit Lab units), so a flat image (fresh snow, a
#: lake) is not amplified into noise.
_MIN_SPREAD = np.float32([8.0, 3.0, 3.0])

#: Largest number of pixels sampled for the pair statistics: moments of 65,536 pixels are as good as of
#: all of them (a 256 px working grid, every pair the model was trained and scored on, is read whole).
_STAT_PIXELS = 1 << 16


def pair_statistics(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-channel normalisation of an RGB pair (uint8 H x W x 3), as a 4 x 3 float32 array.

    Rows: gain and offset taking ``after``'s Lab to ``before``'s moments (estimated a second time on the
    70 % of pixels that differ least, so a large real change does not drag the colours), then the mean
    and the spread (floored) of ``before``'s Lab. Taken on every k-th pixel of every k-th row, with k
    chosen so that at most a quarter of a million pixels are read.
    """
    step = _sample_step(before.shape)
    return lab_statistics(
        cv2.cvtColor(np.ascontiguousarray(before[::step, ::step]), cv2.COLOR_RGB2LAB),
        cv2.cvtColor(np.ascontiguousarray(after[::step, ::step]), cv2.COLOR_RGB2LAB),
    )


def _sample_step(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / _STAT_PIXELS))))


def lab_statistics(lab_before: np.ndarray, lab_after: np.ndarray) -> np.ndarray:
    """:func:`pair_statistics` of a pair already in 8-bit Lab (sampled the same way)."""
    step = _sample_step(lab_before.shape)
    sb = np.ascontiguousarray(lab_before[::step, ::step]).astype(np.float32)
    sa = np.ascontiguousarray(lab_after[::step, ::step]).astype(np.float32)

    def moments(weights):
        s_mean, s_std = cv2.meanStdDev(sa, mask=weights)
        r_mean, r_std = cv2.meanStdDev(sb, mask=weights)
        s_mean, s_std, r_mean, r_std = (v.ravel().astype(np.float32) for v in (s_mean, s_std, r_mean, r_std))
        gains = np.clip(r_std / np.maximum(s_std, 1e-3), 0.33, 3.0)
        return gains, r_mean - s_mean * gains

    gains, offsets = moments(None)
    residual = sa * gains + offsets - sb
    distance = np.einsum("ijk,ijk->ij", residual, residual)
    keep = (distance <= np.percentile(distance, 70)).astype(np.uint8)
    if keep.sum() > 0.2 * keep.size:
        gains, offsets = moments(keep)
    mean, std = cv2.meanStdDev(sb)
    spread = np.maximum(std.ravel().astype(np.float32), _MIN_SPREAD)
    return np.stack([gains, offsets, mean.ravel().astype(np.float32), spread]).astype(np.float32)


def _affine(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel (scale, offset) standardising before's Lab and after's Lab from :func:`pair_statistics`."""
    gains, offsets, mean, spread = stats
    return 1.0 / spread, -mean / spread, gains / spread, (offsets - mean) / spread


def _standardised(plane: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """One uint8 Lab channel (H x W) to float32 ``plane * scale + offset``, in place on one copy."""
    out = plane.astype(np.float32)
    out *= np.float32(scale)
    out += np.float32(offset)
    return out


def encode_pair(before: np.ndarray, after: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """The network input for a (working-scale) pair: float32 6 x H x W, standardised Lab of both images."""
    scale_b, offset_b, scale_a, offset_a = _affine(stats)
    planes = []
    for image, scale, offset in ((before, scale_b, offset_b), (after, scale_a, offset_a)):
        lab = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2LAB))
        planes += [_standardised(lab[c], scale[c], offset[c]) for c in range(3)]
    return np.stack(planes)


def input_tables(stats: np.ndarray, quantization: dict) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables (1 x 256 x 3 uint8, for ``cv2.LUT``) taking each date's 8-bit Lab to the network's input.

    An entry is the standardised value (:func:`encode_pair`'s float32 arithmetic) quantised as the model's
    ``QuantizeLinear`` did it when the model took floats (divide by the scale, round half to even, add the
    zero point, saturate), so the table gives the bytes the graph computed, for a 256th of the work.
    ``quantization`` is the metadata's ``input_quantization``: ``{"before": [scale, zero point], "after": ...}``.
    """
    levels = np.arange(256, dtype=np.float32)
    scale_b, offset_b, scale_a, offset_a = _affine(stats)
    tables = []
    for name, scale, offset in (("before", scale_b, offset_b), ("after", scale_a, offset_a)):
        step, zero_point = np.float32(quantization[name][0]), int(quantization[name][1])
        table = np.empty((1, 256, 3), np.uint8)
        for c in range(3):
            value = _standardised(levels, scale[c], offset[c])
            table[0, :, c] = np.clip(np.rint(value / step) + zero_point, 0, 255)
        tables.append(table)
    return tables[0], tables[1]


def _working_lab(image: np.ndarray, step: int) -> np.ndarray:
    """``image`` at 1/``step`` scale (area average; a last partial row or column mirrored to a whole step)
    in uint8 Lab."""
    if step > 1:
        h, w = image.shape[:2]
        if h % step or w % step:
            image = cv2.copyMakeBorder(image, 0, -h % step, 0, -w % step, cv2.BORDER_REFLECT_101)
        image = cv2.resize(image, (image.shape[1] // step, image.shape[0] // step), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)


#: The metadata format this module reads, and the keys it needs from it.
MODEL_FORMAT = "gridmap change_net 3"
_MODEL_KEYS = ("step", "multiple", "threshold", "core_threshold", "input_quantization")


def load_model_info(model_path: str | Path = MODEL_PATH) -> dict:
    """The JSON metadata written beside an ONNX model by the training script (checked for its format)."""
    path = Path(model_path).with_suffix(".json")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DetectorError(f"{path}: cannot read the learned detector's metadata ({error})") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT or any(k not in info for k in _MODEL_KEYS):
        raise DetectorError(f"{path}: not {MODEL_FORMAT!r} metadata with {', '.join(_MODEL_KEYS)} "
                            "(retrain with scripts/train_change_model.py)")
    return info


class _Network:
    """An ONNX network in an onnxruntime session (thread-safe; ``threads`` intra-op threads)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001  (onnxruntime raises its own untyped errors for a bad file)
            raise DetectorError(f"{path}: onnxruntime cannot load the change model ({error})") from None

    def __call__(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Logits (2 x H x W float32) of a pair of H x W x 3 input tiles (uint8, see :func:`input_tables`)."""
        (out,) = self.session.run(None, {"before": before[None], "after": after[None]})[:1]
        return np.asarray(out, dtype=np.float32).reshape(-1, *before.shape[:2])


@lru_cache(maxsize=8)
def _load(path: str, threads: int) -> tuple[_Network, dict]:
    model = Path(path)
    if not model.is_file():
        raise DetectorError(f"{model}: the learned change model is missing (run scripts/train_change_model.py)")
    return _Network(model, threads), load_model_info(model)


@lru_cache(maxsize=8)
def _metadata(path: str) -> dict:
    return load_model_info(path)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function of float32 ``logits``, in a new array (clipped so that exp cannot overflow)."""
    out = np.clip(logits, -30.0, 30.0)
    np.negative(out, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


@dataclass(frozen=True, kw_only=True)
class LearnedChangeDetector:
    """The learned detector; see the module docstring for its steps.

    Parameters
    ----------
    model_path : str or None
        ONNX model (its ``.json`` metadata beside it); ``None`` for the committed one.
    threshold : float or None
        Probability above which a pixel is changed; ``None`` for the model's own (from its metadata).
    core_threshold : float or None
        Probability above which a pixel is a building's core; ``None`` for the model's own.
    tile : int
        Side of a tile's core, in working-scale pixels.
    margin : int
        Context added on each side of a tile from the image around it, working-scale pixels. The network
        sees about 150 px each way, but little of that far: 64 px of context changes a score at a seam by
        at most about 0.03 and 8 mask pixels of 230,000 in the tests, for a third of the work of 150.
    edge_margin : int
        Context mirrored beyond the image's edges (at most ``margin``). Mirrored context only keeps the
        network's zero padding away from the image; held out, an earlier model scored 32 px as 64 (pooled F1 0.434
        against 0.432, object recall 0.490 both) and a 1024 px tile costs a tenth less.
    min_area : int
        Smallest region kept, full-resolution pixels.
    register_images : bool
        Co-register before comparing.
    max_shift_px : float
        Largest offset :func:`inspection.change.estimate_shift` believes.
    name : str
        Registry name.
    step : int or None
        How many input pixels make one working pixel a side; ``None`` for the model's own (its scale: 2).
        1 only for input that is already at the model's scale (see :meth:`for_reduced_input`).
    """

    model_path: str | None = None
    threshold: float | None = None
    core_threshold: float | None = None
    tile: int = 1024
    margin: int = 64
    edge_margin: int = 32
    min_area: int = 60
    register_images: bool = True
    max_shift_px: float = 20.0
    name: str = "learned"
    step: int | None = None

    @property
    def _path(self) -> str:
        return str(Path(self.model_path) if self.model_path else MODEL_PATH)

    def _model(self) -> tuple[_Network, dict]:
        # As many threads as OpenCV is allowed (the pipeline's tasks and the benchmarks set one).
        return _load(self._path, cv2.getNumThreads())

    @property
    def info(self) -> dict:
        """The model's metadata (normalisation, scale, threshold, training data, scores)."""
        return self._model()[1]

    @property
    def input_step(self) -> int:
        """Input pixels per working pixel a side: the reduction :meth:`maps` applies before the network."""
        # from the metadata alone: a pipeline's main process asks, and has no use for the network
        return int(self.step if self.step is not None else _metadata(self._path)["step"])

    def for_reduced_input(self) -> LearnedChangeDetector:
        """This detector for images already reduced by :attr:`input_step` (a pipeline reading a survey's
        overview at the network's scale rather than decoding pixels only to average them away): no
        reduction, and ``min_area`` in those coarser pixels."""
        step = self.input_step
        return replace(self, step=1, min_area=max(1, round(self.min_area / step**2)))

    def maps(self, before: np.ndarray, after: np.ndarray,
             shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Change and object-core probabilities at the working scale (float32, ``ceil(size / step)``).

        ``shift`` is ``after``'s offset from ``before`` in input pixels (:func:`inspection.change.estimate_shift`);
        it is undone at the working scale, where resampling costs a quarter of what it does on the input.
        """
        net, info = self._model()
        step, multiple = self.input_step, int(info["multiple"])
        lab_b, lab_a = _working_lab(before, step), _working_lab(after, step)
        lab_a = shift_image(lab_a, -shift[0] / step, -shift[1] / step)
        table_b, table_a = input_tables(lab_statistics(lab_b, lab_a), info["input_quantization"])
        # the network's input bytes, once for the whole image (tiles share their margins)
        net_b, net_a = cv2.LUT(lab_b, table_b), cv2.LUT(lab_a, table_a)
        hs, ws = lab_b.shape[:2]
        prob = np.zeros((2, hs, ws), np.float32)
        tile = max(16, int(self.tile))
        margin = max(0, int(self.margin))
        edge = min(margin, max(0, int(self.edge_margin)))
        for y0 in range(0, hs, tile):
            for x0 in range(0, ws, tile):
                y1, x1 = min(y0 + tile, hs), min(x0 + tile, ws)
                # Context around the core, clipped to the image; what is missing at the image's edges is
                # mirrored, which beats the network's zero padding there (held-out object recall on the
                # 256 px pairs 0.45 with zero padding, 0.52 mirrored).
                cy0, cx0 = max(y0 - margin, 0), max(x0 - margin, 0)
                cy1, cx1 = min(y1 + margin, hs), min(x1 + margin, ws)
                top, left = min(margin - (y0 - cy0), edge), min(margin - (x0 - cx0), edge)
                bottom, right = min(margin - (cy1 - y1), edge), min(margin - (cx1 - x1), edge)
                bottom += -((cy1 - cy0) + top + bottom) % multiple
                right += -((cx1 - cx0) + left + right) % multiple
                window = (slice(cy0, cy1), slice(cx0, cx1))
                logits = net(_pad(net_b[window], top, bottom, left, right),
                             _pad(net_a[window], top, bottom, left, right))
                origin_y, origin_x = cy0 - top, cx0 - left  # of the network's input, in working pixels
                prob[:, y0:y1, x0:x1] = _sigmoid(
                    logits[:, y0 - origin_y : y1 - origin_y, x0 - origin_x : x1 - origin_x]
                )
        return prob[0], prob[1]

    def detect(self, before: np.ndarray, after: np.ndarray) -> ChangeResult:
        check_pair(before, after)
        shift = estimate_shift(before, after, max_shift_px=self.max_shift_px) if self.register_images else (0.0, 0.0)
        prob, core = self.maps(before, after, shift)
        return self.result_from_maps(prob, core, before.shape[:2])

    def result_from_maps(self, prob: np.ndarray, core: np.ndarray, shape: tuple[int, int]) -> ChangeResult:
        """Steps 4 to 6 of :meth:`detect`: the mask and score of an image of ``shape`` from its maps."""
        _, info = self._model()
        h, w = shape
        step = self.input_step
        threshold = float(self.threshold if self.threshold is not None else info["threshold"])
        core_threshold = float(self.core_threshold if self.core_threshold is not None else info["core_threshold"])
        mask = (prob > threshold).astype(np.uint8)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disk)
        mask = _fill_holes(mask)
        # At the working scale: the cut is two working pixels wide, so it stays open when upsampled.
        mask = split_at_cores(mask > 0, core > core_threshold).astype(np.uint8)
        _, labels, stats = _regions(mask)
        keep = stats[:, cv2.CC_STAT_AREA] >= self.min_area / step**2
        keep[0] = False
        mask = keep[labels].astype(np.uint8)
        hs, ws = prob.shape
        big = (ws * step, hs * step)  # the (ceil-rounded) working grid times step, cut to the image below
        if step > 1:
            mask = cv2.resize(mask * 255, big, interpolation=cv2.INTER_LINEAR)[:h, :w] > 127
            score = cv2.resize(prob, big, interpolation=cv2.INTER_LINEAR)[:h, :w]
        else:
            mask, score = mask > 0, prob
        # Linear interpolation of probabilities stays within [0, 1]: no clipping needed.
        return ChangeResult(mask=np.ascontiguousarray(mask), score=np.ascontiguousarray(score, dtype=np.float32))


def split_at_cores(mask: np.ndarray, cores: np.ndarray) -> np.ndarray:
    """``mask`` cut along the lines halfway between the cores it holds (both boolean, same shape).

    Every pixel goes to its nearest core; where two neighbouring pixels belong to different cores, both
    are cleared, so the line is closed for 8-connected region labelling too. A region with one core or
    none is left whole.

    >>> mask = np.ones((3, 9), bool)
    >>> cores = np.zeros((3, 9), bool); cores[1, 1] = cores[1, 7] = True
    >>> split_at_cores(mask, cores).astype(int)[0]
    array([1, 1, 1, 0, 0, 1, 1, 1, 1])
    """
    cores = cores & mask
    count, core_labels = cv2.connectedComponents(cores.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask  # fewer than two cores: nothing to split
    regions, region_labels, stats = _regions(mask.astype(np.uint8))
    # Regions holding at least two cores; only their boxes are worked on (most regions hold one).
    region_of_core = np.zeros(count, np.int64)
    region_of_core[core_labels[cores]] = region_labels[cores]  # a core lies inside one region
    held = np.bincount(region_of_core[1:], minlength=regions)
    out = mask.copy()
    for region in np.flatnonzero(held >= 2):
        x, y, w, h = stats[region, :4]
        box = (slice(y, y + h), slice(x, x + w))
        inside = region_labels[box] == region
        _, nearest = cv2.distanceTransformWithLabels(
            (~(cores[box] & inside)).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP
        )
        line = np.zeros(inside.shape, bool)
        across = (nearest[:, :-1] != nearest[:, 1:]) & inside[:, :-1] & inside[:, 1:]
        line[:, :-1] |= across
        line[:, 1:] |= across
        down = (nearest[:-1] != nearest[1:]) & inside[:-1] & inside[1:]
        line[:-1] |= down
        line[1:] |= down
        out[box] &= ~line
    return out


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Mirror-pad ``image`` (H x W, or H x W x C); repeats the mirror when a side is wider than the image."""
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


#: The default detector (see :mod:`inspection.change`): held out, it beats ``building-cva``.
register(register(LearnedChangeDetector()), name="default")
#: For pairs co-registered upstream (the pipeline shifts each tile by the survey-wide offset first).
register(LearnedChangeDetector(register_images=False, name="learned-aligned"))
