"""`facestream eval --labels`: scoring a tracker on labelled frames, as labelled and mirrored.

The metrics are checked on arrays worked out by hand; the command is run on PNG files written
from the synthetic camera with labels.csv from its true keypoints (and on Facemap's refined-data
file), and its numbers are checked against the tracker run here on the same images, flipped by
hand for the mirrored set.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.camera_adapters.registry import default_calibration
from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.preprocess import make_geometry
from facestream.engines.tracker import load_tracker
from facestream.engines.training.evaluation import GROUPS, labelled_metrics
from facestream.engines.training.labelled_frames import LabelsError, load_labelled, mirrored
from facestream.streamer.cli import main

EYE, TIP, PAW = BODYPARTS.index("eye(back)"), BODYPARTS.index("nose(tip)"), BODYPARTS.index("paw")


# ---------------------------------------------------------------- the metrics, by hand


def hand_case():
    """Three images: A 100 rows x 200 cols (padded to 200, 50 rows on top: x 256/200), B 64x64
    (x 4), C 128x128 (x 2); predictions a few pixels off the labels."""
    shapes = [(100, 200), (64, 64), (128, 128)]
    labels = np.zeros((3, 15, 3))
    predicted = np.zeros((3, 15, 3))
    predicted[..., 2] = 0.5
    labels[0, EYE] = (10, 20, 1); predicted[0, EYE] = (13, 24, 0.9)   # 5 px -> 6.4
    labels[0, TIP] = (100, 50, 1); predicted[0, TIP] = (100, 50, 0.8)  # 0
    predicted[0, PAW, 2] = 0.55                                         # paw absent
    labels[1, EYE] = (32, 16, 1); predicted[1, EYE] = (32, 17, 0.7)    # 1 px -> 4
    labels[1, PAW] = (10, 10, 1); predicted[1, PAW] = (10, 13, 0.95)   # 3 px -> 12
    labels[2, EYE] = (64, 64, 1); predicted[2, EYE] = (70, 72, 0.6)    # 10 px -> 20
    predicted[2, PAW, 2] = 0.65
    return predicted, labels, [make_geometry(s) for s in shapes]


def test_metrics_by_hand():
    predicted, labels, geometries = hand_case()
    m = labelled_metrics(predicted, labels, geometries)
    assert (m["images"], m["labelled"], m["absent"]) == (3, 5, 40)
    t = m["tracker"]
    assert t["eye"] == {"median_px": pytest.approx(6.4), "mean_px": pytest.approx((6.4 + 4 + 20) / 3), "n": 3}
    assert t["nose"] == {"median_px": 0.0, "mean_px": 0.0, "n": 1}
    assert t["paw"] == {"median_px": pytest.approx(12.0), "mean_px": pytest.approx(12.0), "n": 1}
    assert t["mouth"] == {"median_px": None, "mean_px": None, "n": 0}
    assert t["whiskers"]["n"] == 0
    assert t["all"] == {"median_px": pytest.approx(6.4), "mean_px": pytest.approx((6.4 + 0 + 4 + 12 + 20) / 5), "n": 5}
    # the blind baseline: eye(back) normalised to each padded square: A (10/200, 70/200), B (32/64,
    # 16/64), C (64/128, 64/128); each guessed by the mean of the other two. nose(tip) and paw are
    # labelled in one image only: no other image to guess from.
    a, b, c = (0.05, 0.35), (0.5, 0.25), (0.5, 0.5)
    guess = lambda p, q: ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)  # noqa: E731
    errors = [256 * math.dist(a, guess(b, c)), 256 * math.dist(b, guess(a, c)), 256 * math.dist(c, guess(a, b))]
    assert errors == pytest.approx([115.3777, 72.9713, 77.0662], abs=1e-3)
    base = m["baseline"]
    assert base["eye"]["n"] == 3 and base["nose"]["n"] == 0 and base["paw"]["n"] == 0
    assert base["eye"]["median_px"] == pytest.approx(sorted(errors)[1])
    assert base["eye"]["mean_px"] == pytest.approx(sum(errors) / 3)
    assert base["all"]["mean_px"] == pytest.approx(sum(errors) / 3)
    lk = m["likelihood"]
    assert lk["labelled"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert lk["absent"] == pytest.approx(0.5)
    assert lk["paw_labelled"] == pytest.approx(0.95)
    assert lk["paw_absent"] == pytest.approx((0.55 + 0.65) / 2)


def test_one_image_has_no_baseline():
    predicted, labels, geometries = hand_case()
    m = labelled_metrics(predicted[:1], labels[:1], geometries[:1])
    assert m["baseline"] is None and m["tracker"]["eye"]["mean_px"] == pytest.approx(6.4)


def test_groups_cover_every_keypoint_once():
    names = [n for parts in GROUPS.values() for n in parts]
    assert sorted(names) == sorted(BODYPARTS)


# ---------------------------------------------------------------- labelled folders


def write_folder(folder: Path, sizes=((320, 240), (200, 260), (320, 240)), seed: int = 11) -> list:
    """PNG frames of the synthetic face (one saved in colour) and labels.csv of its true keypoints
    in view; returns [(name, gray image, labels (15, 3))]."""
    folder.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for i, (width, height) in enumerate(sizes):
        pixels, truth = SyntheticCamera(width, height, fps=30, seed=seed + i).render(5 + 7 * i)
        name = f"frame_{i}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR) if i == 1 else pixels)
        labels = np.zeros((15, 3))
        for k, part in enumerate(BODYPARTS):
            if truth[k, 2] > 0:
                x, y = round(float(truth[k, 0]), 3), round(float(truth[k, 1]), 3)
                rows.append((name, part, x, y))
                labels[k] = (x, y, 1)
        written.append((name, pixels, labels))
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "bodypart", "x", "y"])
        writer.writerows(rows)
    return written


def by_hand(tracker, images: list, labels: list) -> dict:
    """Tracker error at the 256-px scale, by plain loops: per group median/mean, and likelihoods."""
    errors = {g: [] for g in ("all", *GROUPS)}
    lik = {"labelled": [], "absent": [], "paw_labelled": [], "paw_absent": []}
    for image, label in zip(images, labels):
        predicted = tracker.infer(image)[0]
        side = max(image.shape) + (abs(image.shape[0] - image.shape[1]) % 2)
        for k, part in enumerate(BODYPARTS):
            seen = label[k, 2] > 0
            key = ("paw_" if part == "paw" else "") + ("labelled" if seen else "absent")
            lik[key].append(float(predicted[k, 2]))
            if seen:
                e = math.hypot(predicted[k, 0] - label[k, 0], predicted[k, 1] - label[k, 1]) * 256 / side
                errors["all"].append(e)
                errors[next(g for g, parts in GROUPS.items() if part in parts)].append(e)
    return {
        "errors": {g: (float(np.median(v)), float(np.mean(v)), len(v)) if v else (None, None, 0) for g, v in errors.items()},
        "likelihood": {k: float(np.mean(v)) if v else None for k, v in lik.items()},
    }


def check_against(scores: dict, expected: dict) -> None:
    for group, (median, mean, n) in expected["errors"].items():
        row = scores["tracker"][group]
        assert row["n"] == n, group
        assert row["median_px"] == (None if median is None else pytest.approx(median, abs=1e-3)), group
        assert row["mean_px"] == (None if mean is None else pytest.approx(mean, abs=1e-3)), group
    for key, value in expected["likelihood"].items():
        assert scores["likelihood"][key] == (None if value is None else pytest.approx(value, abs=1e-5)), key


@pytest.fixture(scope="module")
def tracker(cache_home):
    return load_tracker("onnx", None, threads=1, calibration=default_calibration())


def eval_json(*args: str) -> dict:
    result = CliRunner().invoke(main, ["eval", "--engine", "onnx", "--threads", "1", "--quiet", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_folder_as_labelled_and_mirrored(tmp_path, tracker):
    written = write_folder(tmp_path / "labelled")
    result = eval_json("--labels", str(tmp_path / "labelled"))
    assert result["images"] == 3 and result["kind"] == "folder" and result["baseline_note"] is None
    assert result["model"] == "facestream-default" and result["engine"] == "onnx"
    gray = [cv2.imread(str(tmp_path / "labelled" / name), cv2.IMREAD_GRAYSCALE) for name, _, _ in written]
    assert all(np.array_equal(g, p) for g, (_, p, _) in zip(gray, written))  # png is lossless, colour made gray
    labels = [lab for _, _, lab in written]
    check_against(result["as_labelled"], by_hand(tracker, gray, labels))
    # mirrored by hand: the image flipped, x -> width - 1 - x for the keypoints in view
    flipped_labels = []
    for image, lab in zip(gray, labels):
        lab = lab.copy()
        lab[lab[:, 2] > 0, 0] = image.shape[1] - 1 - lab[lab[:, 2] > 0, 0]
        flipped_labels.append(lab)
    check_against(result["mirrored"], by_hand(tracker, [np.fliplr(g).copy() for g in gray], flipped_labels))
    assert result["mirrored"]["tracker"]["all"]["mean_px"] != result["as_labelled"]["tracker"]["all"]["mean_px"]
    # the baseline is blind: it does not change when the images do
    (tmp_path / "labelled" / written[0][0]).write_bytes(cv2.imencode(".png", 255 - gray[0])[1].tobytes())
    again = eval_json("--labels", str(tmp_path / "labelled"))
    assert again["as_labelled"]["baseline"] == result["as_labelled"]["baseline"]
    assert again["mirrored"]["baseline"] == result["mirrored"]["baseline"]


def test_mirrored_baseline_is_the_mirrored_layout(tmp_path):
    """Mirroring the labels by hand and scoring them as labelled gives the mirrored baseline."""
    write_folder(tmp_path / "a")
    frames = load_labelled(tmp_path / "a")
    flipped = mirrored(frames)
    for image, orig, lab, olab in zip(flipped.images, frames.images, flipped.labels, frames.labels):
        assert np.array_equal(image, orig[:, ::-1])
        seen = olab[:, 2] > 0
        np.testing.assert_allclose(lab[seen, 0], orig.shape[1] - 1 - olab[seen, 0])
        np.testing.assert_allclose(lab[:, 1:], olab[:, 1:])
    geometries = [make_geometry(i.shape) for i in flipped.images]
    perfect = flipped.labels.copy()
    m = labelled_metrics(perfect, flipped.labels, geometries)
    assert m["tracker"]["all"]["mean_px"] == 0.0 and m["baseline"]["all"]["mean_px"] > 0


def test_readable_table_and_single_image(tmp_path):
    write_folder(tmp_path / "one", sizes=((320, 240),))
    result = CliRunner().invoke(main, ["eval", "--engine", "onnx", "--threads", "1", "--quiet", "--labels", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "as labelled" in text and "mirrored left-right" in text and "whiskers" in text
    assert "baseline: cannot be computed" in text


def test_refined_data_file(tmp_path, tracker):
    """Facemap's refined data: normalized padded squares; scored on them as uint8."""
    side, n = 96, 2
    images, keypoints = [], []
    for i in range(n):
        pixels, truth = SyntheticCamera(side, side, fps=30, seed=40 + i).render(3)
        images.append(pixels.astype(np.float64) / 255.0)  # normalized to 0..1, as Facemap's GUI keeps them
        xy = truth[:, :2].astype(np.float64)
        xy[truth[:, 2] == 0] = np.nan
        keypoints.append(np.concatenate([xy, np.ones((15, 1))], axis=1))
    path = tmp_path / "mouse_Facemap_refined_data.npy"
    np.save(path, {"imgs": [np.stack(images)], "keypoints": [np.stack(keypoints)], "bbox": [[0, side, 0, side]],
                   "bodyparts": list(BODYPARTS), "frame_ind": np.arange(n)}, allow_pickle=True)
    result = eval_json("--labels", str(path))
    assert result["kind"] == "refined" and result["images"] == n
    as_uint8 = []
    for image in images:  # the linear map to 0..255 the loader makes, on the float32 squares it reads
        image = image.astype(np.float32).astype(np.float64)
        lo, hi = float(image.min()), float(image.max())
        as_uint8.append(np.clip(np.rint((image - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8))
    labels = []
    for k in keypoints:
        lab = np.zeros((15, 3))
        seen = np.isfinite(k[:, 0])
        lab[seen, :2], lab[seen, 2] = k[seen, :2], 1
        labels.append(lab)
    check_against(result["as_labelled"], by_hand(tracker, as_uint8, labels))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "nowhere", ["nowhere: no such folder or file"]),
        (lambda d: (d / "empty").mkdir() or d / "empty", ["no labels.csv"]),
        (lambda d: _csv(d, "image,bodypart,x,y\nframe_0.png,snout,3,4\n"), ["unknown bodypart", "'snout'"]),
        (lambda d: _csv(d, "image,bodypart,x,y\nmissing.png,paw,3,4\n"), ["image missing.png is not in"]),
        (lambda d: _csv(d, "image,part,x,y\nframe_0.png,paw,3,4\n"), ["missing bodypart"]),
        (lambda d: _csv(d, "image,bodypart,x,y\nframe_0.png,paw,900,4\n"), ["line 2", "outside frame_0.png"]),
        (lambda d: _csv(d, "image,bodypart,x,y\nframe_0.png,paw,a,4\n"), ["line 2", "must be numbers"]),
        (lambda d: _csv(d, "image,bodypart,x,y\nframe_0.png,paw,1,4\nframe_0.png,paw,2,4\n"), ["line 3", "second row"]),
    ],
)
def test_bad_input_is_one_line(tmp_path, make, words):
    target = make(tmp_path)
    result = CliRunner().invoke(main, ["eval", "--quiet", "--labels", str(target)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error: "), result.output
    for word in words:
        assert word in lines[0]


def _csv(folder: Path, text: str) -> Path:
    target = folder / "labelled"
    target.mkdir()
    cv2.imwrite(str(target / "frame_0.png"), np.full((40, 60), 90, np.uint8))
    (target / "labels.csv").write_text(text)
    return target


def test_load_errors_are_labels_errors(tmp_path):
    with pytest.raises(LabelsError):
        load_labelled(tmp_path / "nothing")
