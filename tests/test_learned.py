"""The learned change detector (``learned``): the committed ONNX model, tiling, errors, real pairs.

No test trains: they all use ``inspection/models/change_net.onnx`` as committed by
``scripts/train_change_model.py``.
"""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from inspection.change import ChangeResult, Detector, get_detector, shift_image
from inspection.errors import DetectorError
from inspection.learned import MODEL_PATH, LearnedChangeDetector, load_model_info


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    """A synthetic 0.4 m survey of the demo street, 480 x 480 RGB."""
    from inspection.synthetic import demo_scene, render_survey

    scene = demo_scene(seed=3, size_m=192.0, resolution=0.4)
    return render_survey(scene, seed=5, texture_seed=3)


def relit(image: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Another day: moved by (dx, dy) px, a little darker, warmer, with fresh noise."""
    moved = shift_image(image, dx, dy).astype(np.float32)
    moved = moved * np.float32([0.92, 0.90, 0.84]) + np.float32([14, 12, 8])
    moved += np.random.default_rng(0).normal(0, 2.0, moved.shape).astype(np.float32)
    return np.clip(moved, 0, 255).astype(np.uint8)


def add_roof(image: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """A blue colour-steel roof (ribbed, with a dark rim) pasted onto ``image``."""
    out = image.copy()
    out[y0 : y0 + h, x0 : x0 + w] = (62, 105, 190)
    out[y0 : y0 + h : 4, x0 : x0 + w] = (95, 140, 220)
    cv2.rectangle(out, (x0, y0), (x0 + w - 1, y0 + h - 1), (40, 70, 140), 1)
    return out


def test_committed_model_loads_and_is_registered():
    assert MODEL_PATH.is_file()
    assert MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    info = load_model_info()
    assert info["step"] >= 1 and 0.0 < info["threshold"] < 1.0
    # the honest figures travel with the weights: pairs scored by a model trained without them
    assert {"k_fold", "leave_one_set_out"} & set(info["scores"])
    detector = get_detector("learned")
    assert isinstance(detector, Detector) and isinstance(detector, LearnedChangeDetector)
    assert detector.name == "learned"
    with pytest.raises(Exception):  # frozen, like the default detector
        detector.tile = 3  # type: ignore[misc]


def test_output_types_and_shape_follow_the_input(street):
    before = street[:301, :257]  # odd sizes: the working grid is rounded up, the mask is not
    result = get_detector("learned").detect(before, relit(before))
    assert isinstance(result, ChangeResult)
    assert result.mask.shape == before.shape[:2] and result.mask.dtype == bool
    assert result.score.shape == before.shape[:2] and result.score.dtype == np.float32
    assert float(result.score.min()) >= 0.0 and float(result.score.max()) <= 1.0


def test_identical_pair_gives_almost_no_change(street):
    result = get_detector("learned").detect(street, street.copy())
    assert result.mask.mean() < 0.005


def test_relit_unchanged_pair_gives_little_change(street):
    result = get_detector("learned").detect(street, relit(street, 0.6, -0.4))
    assert result.mask.mean() < 0.02


def test_new_roof_is_found(street):
    x0, y0, w, h = 300, 60, 44, 32  # 17.6 x 12.8 m at 0.4 m, in a courtyard-free spot or not: it is new
    after = add_roof(relit(street), x0, y0, w, h)
    result = get_detector("learned").detect(street, after)
    truth = np.zeros(street.shape[:2], bool)
    truth[y0 : y0 + h, x0 : x0 + w] = True
    count, labels = cv2.connectedComponents(result.mask.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[truth & result.mask])
    found = np.isin(labels, touching[touching > 0])
    iou = (found & truth).sum() / max((found | truth).sum(), 1)
    assert iou > 0.5, f"IoU {iou:.2f} with the pasted roof"


def test_tiled_inference_matches_whole_image(street):
    after = add_roof(relit(street), 100, 300, 40, 30)
    whole = LearnedChangeDetector(tile=4096).detect(street, after)  # one tile: the whole image
    tiled = LearnedChangeDetector(tile=64).detect(street, after)  # 480 px -> 240 working px: 16 tiles
    # The default 64 px of context is less than the network sees (about 150 px): a score at a seam may move
    # by a few hundredths, a mask pixel almost never.
    assert np.abs(whole.score - tiled.score).max() < 0.08
    assert (whole.mask != tiled.mask).mean() < 0.002
    # With context wider than the network looks, tiles put together are the whole image's answer.
    exact = LearnedChangeDetector(tile=64, margin=160).detect(street, after)
    assert np.abs(whole.score - exact.score).max() < 1e-3


def test_reduced_input_gives_the_full_resolution_answer_at_its_scale(street):
    """What the pipeline does with an overview: the detector told its input is already at the network's
    scale finds what it finds on the full-resolution pair, region for region."""
    after = add_roof(relit(street), 300, 60, 44, 32)
    full = get_detector("learned")
    step = full.input_step
    assert step == 2

    def reduce(image):
        return cv2.resize(image, (image.shape[1] // step, image.shape[0] // step), interpolation=cv2.INTER_AREA)

    reduced = full.for_reduced_input()
    assert reduced.input_step == 1 and reduced.min_area == round(full.min_area / step**2)
    small = reduced.detect(reduce(street), reduce(after))
    assert small.mask.shape == (street.shape[0] // step, street.shape[1] // step)
    big = full.detect(street, after)
    big_mask = cv2.resize(big.mask.astype(np.uint8), small.mask.shape[::-1], interpolation=cv2.INTER_AREA) > 0
    assert small.mask.sum() > 200  # the roof: 22 x 16 px at this scale
    assert (small.mask != big_mask).mean() < 0.01
    assert np.abs(small.score - reduce(big.score)).mean() < 0.02


@pytest.mark.parametrize(
    "before, after",
    [
        (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.float32)),  # wrong dtype
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)),  # not RGB
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 72, 3), np.uint8)),  # sizes differ
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)),  # too small
        ([[0]], [[0]]),  # not arrays
    ],
)
def test_bad_input_raises_detector_error(before, after):
    with pytest.raises(DetectorError):
        get_detector("learned").detect(before, after)


def test_missing_model_raises_detector_error(tmp_path, street):
    with pytest.raises(DetectorError, match="missing"):
        LearnedChangeDetector(model_path=str(tmp_path / "nope.onnx")).detect(street, street)


def test_metadata_of_another_format_raises_detector_error(tmp_path, street):
    model = tmp_path / "change_net.onnx"
    shutil.copyfile(MODEL_PATH, model)
    info = load_model_info()
    del info["core_threshold"]
    model.with_suffix(".json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(DetectorError, match="core_threshold"):
        LearnedChangeDetector(model_path=str(model)).detect(street, street)


def test_corrupt_model_raises_detector_error(tmp_path, street):
    model = tmp_path / "change_net.onnx"
    model.write_bytes(MODEL_PATH.read_bytes()[:5000])  # a truncated download
    shutil.copyfile(MODEL_PATH.with_suffix(".json"), model.with_suffix(".json"))
    with pytest.raises(DetectorError, match="cannot load"):
        LearnedChangeDetector(model_path=str(model)).detect(street, street)


def test_real_pairs_beat_the_baseline(shared_data):
    from inspection.evaluate import evaluate_folder

    df = evaluate_folder(shared_data / "changes", detectors=("baseline", "learned"))
    pooled = df[df["set"] == "pooled"].set_index("detector")
    learned, baseline = pooled.loc["learned", "pixel_f1"], pooled.loc["baseline", "pixel_f1"]
    assert not math.isnan(learned)
    assert learned > baseline, f"learned pooled F1 {learned:.3f} not above baseline {baseline:.3f}"


def test_input_tables_give_the_quantised_standardised_lab_of_each_date(street):
    """The bytes the network gets are encode_pair's float input (each date's standardised Lab), quantised:
    within half a step of it, or at the end of the byte range where it lies outside."""
    from inspection.learned import _working_lab, encode_pair, input_tables, pair_statistics

    before, after = street, relit(street, 1.5, -0.5)
    stats = pair_statistics(before, after)
    expected = encode_pair(before, after, stats)  # 6 x H x W: before's L, a, b, then after's
    quantization = load_model_info()["input_quantization"]
    tables = input_tables(stats, quantization)
    for k, (name, image) in enumerate((("before", before), ("after", after))):
        scale, zero_point = quantization[name]
        got = (cv2.LUT(_working_lab(image, 1), tables[k]).astype(np.float32) - zero_point) * scale
        want = np.clip(np.moveaxis(expected[3 * k : 3 * k + 3], 0, -1),
                       -zero_point * scale, (255 - zero_point) * scale)
        assert np.abs(got - want).max() <= scale / 2 + 1e-5, name
    assert not np.array_equal(tables[0], tables[1])  # each date its own standardisation


def test_split_at_cores_cuts_joined_buildings_apart_and_leaves_single_ones_whole():
    from inspection.learned import split_at_cores

    mask = np.zeros((40, 80), bool)
    mask[5:35, 5:35] = True  # a house
    mask[5:35, 45:75] = True  # its neighbour
    mask[15:25, 35:45] = True  # the yard between them, changed too
    cores = np.zeros_like(mask)
    cores[15:25, 15:25] = cores[15:25, 55:65] = True
    cores[0, 0] = True  # outside the mask: ignored
    split = split_at_cores(mask, cores)
    count, labels = cv2.connectedComponents(split.astype(np.uint8), connectivity=8)
    assert count - 1 == 2
    assert labels[20, 20] != labels[20, 60]
    assert (mask & ~split).sum() <= 2 * 10 + 4  # a two-pixel cut across the 10-pixel bridge, nothing else
    one_core = np.zeros_like(mask)
    one_core[15:25, 15:25] = True
    assert np.array_equal(split_at_cores(mask, one_core), mask)


def test_split_at_cores_leaves_a_one_core_region_whole_beside_a_split_one():
    from inspection.learned import split_at_cores

    mask = np.zeros((40, 120), bool)
    mask[5:35, 5:35] = mask[5:35, 45:75] = mask[15:25, 35:45] = True  # two houses joined by a yard
    mask[5:35, 78:115] = True  # a long shed 3 px from the second house, with one core at its far end
    cores = np.zeros_like(mask)
    cores[15:25, 15:25] = cores[15:25, 55:65] = True
    cores[15:25, 105:112] = True
    split = split_at_cores(mask, cores)
    assert np.array_equal(split[:, 78:], mask[:, 78:])  # the house's core is nearer its near end: no matter
    assert cv2.connectedComponents(split.astype(np.uint8), connectivity=8)[0] - 1 == 3
