"""Scoring of change masks against labelled pairs (pixel and object level).

A folder of labelled pairs is laid out as ``ROOT/<set>/{A,B,label}/<name>``: ``A`` the before image, ``B``
the after image, ``label`` a single-channel mask where non-zero means "changed building". Every set is
scored per detector, then all pairs are pooled by summing the counts (not averaging the per-set figures,
so a large pair weighs by its pixels, as it does on the ground).

Object level: connected components with 8-connectivity. A label region is *found* when some predicted
region overlaps it with IoU >= 0.3; a predicted region is *correct* when it has IoU >= 0.3 with some label
region. The 0.3 bar (rather than "touches") keeps one huge false blob from "finding" every building under
it, while accepting the loose outlines a change detector draws around a roof.

A pair whose label is all zero has no changed class: its pixel recall and object recall are undefined
(NaN), never a division by zero; its false positives still count in the pooled precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from inspection.change import check_image_size, get_detector, read_rgb
from inspection.errors import DetectorError, ImageError, InspectionError

#: IoU a predicted and a label region need for an object match.
OBJECT_IOU = 0.3

#: Image suffixes read in a pairs folder; anything else in A/B/label is an error, not silently skipped.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

COUNT_KEYS = ("tp", "fp", "fn", "tn", "label_objects", "found_objects", "pred_objects", "correct_objects")

COLUMNS = (
    "set",
    "detector",
    "pairs",
    "megapixels",
    "pixel_precision",
    "pixel_recall",
    "pixel_f1",
    "iou",
    "object_precision",
    "object_recall",
    "seconds",
)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Number of 8-connected foreground regions and the label image (0 = background)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return count - 1, labels


def _region_ious(pred_labels: np.ndarray, n_pred: int, true_labels: np.ndarray, n_true: int) -> np.ndarray:
    """IoU matrix (n_true x n_pred) of every label region against every predicted region."""
    if n_pred == 0 or n_true == 0:
        return np.zeros((n_true, n_pred))
    # Joint histogram of (label id, predicted id) gives every intersection in one pass.
    joint = true_labels.astype(np.int64) * (n_pred + 1) + pred_labels
    inter = np.bincount(joint.ravel(), minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)
    true_area = inter.sum(axis=1)[1:]
    pred_area = inter.sum(axis=0)[1:]
    inter = inter[1:, 1:].astype(np.float64)
    union = true_area[:, None] + pred_area[None, :] - inter
    return inter / np.maximum(union, 1)


def score_pair(pred_mask: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """Pixel and object counts of one predicted mask against its label.

    Parameters
    ----------
    pred_mask, label : ndarray
        2-D arrays of the same shape; non-zero (or True) means changed.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``tn`` (pixels), ``label_objects``, ``found_objects`` (label regions matched
        by a predicted region with IoU >= 0.3), ``pred_objects``, ``correct_objects`` (predicted regions
        matching some label region with IoU >= 0.3).

    Examples
    --------
    >>> pred = np.zeros((4, 6), bool); pred[0:2, 0:2] = True
    >>> lab = np.zeros((4, 6), bool); lab[0:2, 0:3] = True; lab[3, 5] = True
    >>> c = score_pair(pred, lab)
    >>> c["tp"], c["fp"], c["fn"], c["label_objects"], c["found_objects"], c["correct_objects"]
    (4, 0, 3, 2, 1, 1)
    """
    pred = np.asarray(pred_mask) != 0
    true = np.asarray(label) != 0
    if pred.shape != true.shape or pred.ndim != 2:
        raise DetectorError(f"mask shape {pred.shape} does not match label shape {true.shape}")
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred & ~true))
    fn = int(np.count_nonzero(~pred & true))
    tn = int(pred.size - tp - fp - fn)
    n_pred, pred_labels = _components(pred)
    n_true, true_labels = _components(true)
    ious = _region_ious(pred_labels, n_pred, true_labels, n_true)
    hits = ious >= OBJECT_IOU
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "label_objects": n_true,
        "found_objects": int(hits.any(axis=1).sum()) if n_true else 0,
        "pred_objects": n_pred,
        "correct_objects": int(hits.any(axis=0).sum()) if n_pred else 0,
    }


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def metrics(counts: dict[str, int]) -> dict[str, float]:
    """Precision, recall, F1, IoU of the changed class and object precision/recall from summed counts.

    Undefined figures (nothing predicted, nothing labelled) are NaN.

    Examples
    --------
    >>> m = metrics({"tp": 4, "fp": 0, "fn": 3, "tn": 17, "label_objects": 2, "found_objects": 1,
    ...              "pred_objects": 1, "correct_objects": 1})
    >>> round(m["pixel_f1"], 4), round(m["iou"], 4), m["object_recall"]
    (0.7273, 0.5714, 0.5)
    """
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    # F1 = 2tp / (2tp + fp + fn) is defined whenever anything is predicted or labelled; undefined (NaN) only
    # when both are empty, where "perfect" or "zero" would both be arbitrary.
    return {
        "pixel_precision": precision,
        "pixel_recall": recall,
        "pixel_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "object_precision": _ratio(counts["correct_objects"], counts["pred_objects"]),
        "object_recall": _ratio(counts["found_objects"], counts["label_objects"]),
    }


def _read_label(path: Path) -> np.ndarray:
    """A label image as a boolean mask: changed where the value is above half the label's own maximum.

    So 0/255, 0/1 and 0/65535 labels all read alike, and so do JPEG-saved labels, whose compression leaves
    faint non-zero values around every region. A label saved as RGB(A) counts its brightest colour channel.
    """
    check_image_size(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a readable image")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    return image > image.max() / 2


def _image_names(folder: Path) -> list[str]:
    names = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store and friends
        if not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise InspectionError(f"{entry}: not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        names.append(entry.name)
    return names


def discover_pairs(root: str | Path) -> dict[str, list[tuple[Path, Path, Path]]]:
    """Find the labelled pairs under ``root``: ``{set name: [(A path, B path, label path), ...]}``.

    ``root`` may itself be one set (holding ``A``, ``B``, ``label``) or a folder of sets. Files pair up by
    name without extension (``A/12.jpg``, ``B/12.jpg``, ``label/12.png``).

    Raises
    ------
    InspectionError
        No set found, a set missing one of its folders, names that differ between ``A``, ``B`` and
        ``label``, two images of one name in a folder, or a non-image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise InspectionError(f"{root}: not a folder")
    candidates = [root] if (root / "A").is_dir() else sorted(p for p in root.iterdir() if (p / "A").is_dir())
    if not candidates:
        raise InspectionError(f"{root}: no */A folders (expected <set>/A, <set>/B, <set>/label)")
    sets: dict[str, list[tuple[Path, Path, Path]]] = {}
    for folder in candidates:
        for sub in ("B", "label"):
            if not (folder / sub).is_dir():
                raise InspectionError(f"{folder}: has A/ but no {sub}/")
        by_stem = {sub: _images_by_stem(folder / sub) for sub in ("A", "B", "label")}
        if not by_stem["A"]:
            raise InspectionError(f"{folder / 'A'}: no images")
        for sub in ("B", "label"):
            if by_stem[sub].keys() != by_stem["A"].keys():
                missing = sorted(by_stem["A"].keys() ^ by_stem[sub].keys())
                raise InspectionError(f"{folder}: A/ and {sub}/ hold different file names (e.g. {missing[0]})")
        sets[folder.name] = [tuple(folder / sub / by_stem[sub][stem] for sub in ("A", "B", "label"))
                             for stem in sorted(by_stem["A"])]
    return sets


def _images_by_stem(folder: Path) -> dict[str, str]:
    """``{stem: file name}`` of a folder's images: pairs match by name without extension, as datasets often
    keep JPEG photos beside PNG labels (``A/12.jpg``, ``label/12.png``)."""
    found: dict[str, str] = {}
    for name in _image_names(folder):
        stem = Path(name).stem
        if stem in found:
            raise InspectionError(f"{folder}: {found[stem]} and {name} have the same name; which one is the pair's?")
        found[stem] = name
    return found


def evaluate_folder(root: str | Path, detectors: Sequence[str] = ("baseline", "default")):
    """Score detectors on every labelled pair under ``root``, per set and pooled.

    Parameters
    ----------
    root : path
        A folder of sets laid out as ``*/A``, ``*/B``, ``*/label`` (or one such set).
    detectors : sequence of str
        Registered detector names (see :func:`inspection.change.get_detector`), all run on the same pairs.

    Returns
    -------
    pandas.DataFrame
        One row per (set, detector), then one ``set == "pooled"`` row per detector whose figures come from
        the counts summed over every pair. Columns: see :data:`COLUMNS` plus the raw counts.
    """
    import pandas as pd

    chosen = [get_detector(name) for name in detectors]  # fail on a bad name before reading anything
    sets = discover_pairs(root)
    rows = []
    pooled = {name: dict.fromkeys(COUNT_KEYS, 0) | {"pairs": 0, "pixels": 0, "seconds": 0.0} for name in detectors}
    for set_name, pairs in sets.items():
        per_set = {name: dict.fromkeys(COUNT_KEYS, 0) | {"pairs": 0, "pixels": 0, "seconds": 0.0} for name in detectors}
        for a_path, b_path, label_path in pairs:
            before, after, label = read_rgb(a_path), read_rgb(b_path), _read_label(label_path)
            if before.shape != after.shape or label.shape != before.shape[:2]:
                raise InspectionError(
                    f"{set_name}/{a_path.name}: sizes differ (A {before.shape[:2]}, B {after.shape[:2]}, "
                    f"label {label.shape})"
                )
            for name, detector in zip(detectors, chosen):
                start = time.perf_counter()
                result = detector.detect(before, after)
                elapsed = time.perf_counter() - start
                counts = score_pair(result.mask, label)
                for acc in (per_set[name], pooled[name]):
                    for key in COUNT_KEYS:
                        acc[key] += counts[key]
                    acc["pairs"] += 1
                    acc["pixels"] += label.size
                    acc["seconds"] += elapsed
        for name in detectors:
            rows.append(_row(set_name, name, per_set[name]))
    for name in detectors:
        rows.append(_row("pooled", name, pooled[name]))
    frame = pd.DataFrame(rows)
    return frame[list(COLUMNS) + list(COUNT_KEYS)]


def _row(set_name: str, detector: str, acc: dict) -> dict:
    return {
        "set": set_name,
        "detector": detector,
        "pairs": acc["pairs"],
        "megapixels": acc["pixels"] / 1e6,
        "seconds": acc["seconds"],
        **metrics(acc),
        **{key: acc[key] for key in COUNT_KEYS},
    }


def format_report(df) -> str:
    """A plain-text table of :func:`evaluate_folder` figures (NaN shown as ``-``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame([{"set": "s", "detector": "d", "pairs": 1, "megapixels": 0.065536,
    ...     "pixel_precision": 0.5, "pixel_recall": float("nan"), "pixel_f1": 0.4, "iou": 0.25,
    ...     "object_precision": 1.0, "object_recall": 0.75}])
    >>> print(format_report(df).splitlines()[2])
    s    d             1  0.07  0.500      -   0.400  0.250  1.000  0.750
    """
    headers = ("set", "detector", "pairs", "MP", "pix P", "pix R", "pix F1", "IoU", "obj P", "obj R")
    keys = ("pixel_precision", "pixel_recall", "pixel_f1", "iou", "object_precision", "object_recall")

    def fig(value: float) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    lines = []
    for record in df.to_dict("records"):
        lines.append(
            (str(record["set"]), str(record["detector"]), str(record["pairs"]), f"{record['megapixels']:.2f}")
            + tuple(fig(record[k]) for k in keys)
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
    out = []
    for i, line in enumerate([headers, *lines]):
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(widths[j + 2]) for j, cell in enumerate(line[2:])]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)

