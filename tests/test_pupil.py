"""The pupil: Facemap's fit, its region following the eye keypoints, and its error against the
synthetic face's true pupil."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from facestream.streamer.pupil import NO_PUPIL, PupilFinder, eye_ellipse, fit_gaussian, otsu
from facestream.streamer.tools.facemap_compare import facemap_python

EYE = {n: BODYPARTS.index(n) for n in ("eye(back)", "eye(front)", "eye(top)", "eye(bottom)")}


def _eye_keypoints(centre=(100.0, 80.0), half=(40.0, 30.0), likelihood=0.9) -> np.ndarray:
    """Keypoints with a level eye of these semi-axes around ``centre``; the rest far away."""
    kp = np.zeros((N_KEYPOINTS, 3), np.float32)
    kp[:, 2] = likelihood
    x, y = centre
    kp[EYE["eye(back)"], :2] = (x - half[0], y)
    kp[EYE["eye(front)"], :2] = (x + half[0], y)
    kp[EYE["eye(top)"], :2] = (x, y - half[1])
    kp[EYE["eye(bottom)"], :2] = (x, y + half[1])
    return kp


def _disc_frame(centre=(103.0, 84.0), r=12.0, iris=90, pupil=20, background=200) -> np.ndarray:
    """A bright frame, a grey eye ellipse and a dark disc: the pupil."""
    img = np.full((160, 220), background, np.uint8)
    cv2.ellipse(img, (100, 80), (40, 30), 0, 0, 360, iris, -1)
    cv2.circle(img, (round(centre[0] * 16), round(centre[1] * 16)), round(r * 16), pupil, -1, cv2.LINE_AA, 4)
    return img


def test_a_dark_disc_is_found_with_its_size_and_place():
    pupil = PupilFinder(0.85, 0.6, 0.0).find(_disc_frame(), _eye_keypoints())
    assert pupil.valid
    assert pupil.area == pytest.approx(np.pi * 12.0 ** 2, rel=0.05)
    assert pupil.centre == pytest.approx((103.0, 84.0), abs=0.3)
    assert pupil.axes[0] == pytest.approx(12.0, rel=0.05) and pupil.axes[1] == pytest.approx(12.0, rel=0.05)


def test_the_region_follows_the_eye_keypoints():
    """The same eye moved by (37, 21) pixels, its keypoints with it: the pupil moves as much."""
    finder = PupilFinder(0.85, 0.6, 1.0)
    here = finder.find(_disc_frame(), _eye_keypoints())
    moved = np.roll(np.roll(_disc_frame(), 21, axis=0), 37, axis=1)
    there = finder.find(moved, _eye_keypoints(centre=(137.0, 101.0)))
    assert there.centre == pytest.approx((here.centre[0] + 37, here.centre[1] + 21), abs=0.05)
    assert there.area == pytest.approx(here.area, rel=1e-6)


def test_unlikely_eye_keypoints_make_it_invalid_but_still_measured():
    kp = _eye_keypoints()
    kp[EYE["eye(top)"], 2] = 0.55
    pupil = PupilFinder(0.85, 0.6, 1.0).find(_disc_frame(), kp)
    assert not pupil.valid and pupil.area == pytest.approx(np.pi * 144, rel=0.1)
    message = pupil.as_message()
    assert message["valid"] is False and len(message["centre"]) == 2 and len(message["axes"]) == 2


@pytest.mark.parametrize("centre", [(-80.0, -80.0), (400.0, 80.0), (100.0, 80.0)])
def test_an_eye_off_the_frame_or_collapsed_has_no_pupil(centre):
    kp = _eye_keypoints(centre=centre, half=(40.0, 0.5) if centre == (100.0, 80.0) else (40.0, 30.0))
    pupil = PupilFinder(0.85, 0.6, 1.0).find(_disc_frame(), kp)
    assert pupil == NO_PUPIL
    assert pupil.as_message() == {"area": None, "centre": None, "axes": None, "valid": False}


def test_an_eye_at_the_frame_edge_is_clipped_not_refused():
    frame = np.roll(_disc_frame(), -70, axis=1)  # the eye's back corner leaves the frame
    pupil = PupilFinder(0.85, 0.6, 1.0).find(frame, _eye_keypoints(centre=(30.0, 80.0)))
    assert pupil.valid and pupil.centre == pytest.approx((33.0, 84.0), abs=0.5)


def test_a_flat_eye_without_a_darker_pupil_is_no_fit():
    img = np.full((160, 220), 200, np.uint8)
    cv2.ellipse(img, (100, 80), (40, 30), 0, 0, 360, 90, -1)
    assert PupilFinder(0.85, 0.6, 0.0).find(img, _eye_keypoints()) == NO_PUPIL


def test_otsu_splits_two_levels():
    counts = np.zeros(256)
    counts[20], counts[90] = 300, 700
    assert 20 <= otsu(counts) < 90


def test_eye_ellipse_is_the_keypoints_ellipse_scaled():
    (cx, cy), (a, b), angle = eye_ellipse(_eye_keypoints(half=(40.0, 30.0)), 0.5)
    assert (cx, cy, a, b, angle) == pytest.approx((100.0, 80.0, 20.0, 15.0, 0.0))


@pytest.mark.skipif(facemap_python() is None and not __import__("pathlib").Path(".facemap-venv/bin/python").is_file(),
                    reason="Facemap is not installed here (set FACEMAP_PYTHON)")
def test_fit_matches_facemaps_own_pupil_code(tmp_path):
    """Facemap 1.0.8's pupil.process, in its own interpreter, on the same eye images and the same
    threshold: the same centre, axes and area."""
    cam = SyntheticCamera(640, 480, 50.0, seed=4)
    crops, ours = [], []
    for k in (0, 40, 80):
        pixels, kp = cam.render(k)
        (cx, cy), (a, b), angle = eye_ellipse(kp, 0.85)
        x0, y0 = int(cx - a - 2), int(cy - a - 2)
        crop = pixels[y0:y0 + int(2 * a + 4), x0:x0 + int(2 * a + 4)].astype(np.float32)
        mask = np.zeros(crop.shape, np.uint8)
        cv2.ellipse(mask, (round(cx - x0), round(cy - y0)), (round(a), round(b)), angle, 0, 360, 1, -1)
        crop[mask == 0] = 255  # Facemap: outside the drawn ellipse is white
        crops.append(crop)
        ours.append(fit_gaussian(np.maximum(0.0, 30.0 - crop)))
    np.save(tmp_path / "crops.npy", np.stack(crops))
    python = facemap_python() or ".facemap-venv/bin/python"
    code = ("import json, sys, numpy as np; from facemap import pupil; "
            "com, area, axdir, axlen = pupil.process(np.load(sys.argv[1]), 30.0, 2.0); "
            "print(json.dumps({'com': com.tolist(), 'area': area.tolist(), 'axlen': axlen.tolist()}))")
    out = subprocess.run([python, "-c", code, str(tmp_path / "crops.npy")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = json.loads(out.stdout.splitlines()[-1])
    for i, (mu, sv, _) in enumerate(ours):
        assert mu == pytest.approx(theirs["com"][i], abs=1e-3)
        assert sorted(sv) == pytest.approx(sorted(theirs["axlen"][i]), rel=1e-3)
        assert np.pi * np.sqrt(sv[0] * sv[1]) == pytest.approx(theirs["area"][i], rel=1e-3)


def test_error_against_the_synthetic_faces_true_pupil():
    """With the true eye keypoints, on open eyes of 8 faces: the pupil's area within 15 % and its
    centre within 3 pixels (medians). docs/benchmarks.md has the figures with tracked keypoints."""
    finder = PupilFinder(0.85, 0.6, 1.0)
    area_error, centre_error = [], []
    for seed in range(8):
        cam = SyntheticCamera(640, 480, 50.0, seed=seed)
        for k in range(0, 400, 50):
            if cam.latents(k)["blink"] > 0.1:
                continue
            pixels, truth = cam.render(k)
            x, y, r = cam.pupil(k)
            pupil = finder.find(pixels, truth)
            assert pupil.valid
            area_error.append(abs(pupil.area / (np.pi * r * r) - 1))
            centre_error.append(np.hypot(pupil.centre[0] - x, pupil.centre[1] - y))
    assert len(area_error) >= 40
    assert np.median(area_error) < 0.15 and np.median(centre_error) < 3.0


def test_true_pupil_is_where_the_renderer_draws_it():
    """SyntheticCamera.pupil: the darkest disc of a face with a dark pupil in a lighter iris lies
    at the true centre."""
    cam = SyntheticCamera(640, 480, 50.0, seed=5)
    pixels, _ = cam.render(0)
    x, y, r = cam.pupil(0)
    ring = np.zeros(pixels.shape, np.uint8)
    cv2.circle(ring, (round(x), round(y)), round(1.6 * r), 1, -1)
    cv2.circle(ring, (round(x), round(y)), round(1.15 * r), 0, -1)
    disc = np.zeros(pixels.shape, np.uint8)
    cv2.circle(disc, (round(x), round(y)), round(0.8 * r), 1, -1)
    assert pixels[disc > 0].mean() + 4 < np.median(pixels[ring > 0])


def test_pupil_error_command_measures_tracked_and_true_keypoints(tmp_path):
    cli = [sys.executable, "-m", "facestream.streamer.cli", "pupil-error"]
    out = subprocess.run([*cli, "--frames", "6", "--seeds", "2", "--engine", "torch", "--json"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["seeds"] == [10000, 10001] and result["engine"] == "torch"
    for name in ("tracked_keypoints", "true_keypoints"):
        s = result[name]
        assert s["frames"] == 6 and s["fitted"] == 6
        assert s["area_relative_error"]["median"] < 0.5 and s["centre_error_px"]["median"] < 5
    assert "tracked eye keypoints: area error median" in out.stderr
    bad = subprocess.run([*cli, "--config", str(tmp_path / "none.toml")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"facestream: error: config file not found: {tmp_path / 'none.toml'}"]


def test_a_large_region_is_binned_and_measured_alike():
    """A close-up eye (here 4 times larger: a region of 440 x 440 pixels) is binned to keep the
    cost bounded: the same pupil, scaled."""
    small = PupilFinder(0.85, 0.6, 1.0).find(_disc_frame(), _eye_keypoints())
    frame = cv2.resize(_disc_frame(), None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    kp = _eye_keypoints(centre=(401.5, 321.5), half=(160.0, 120.0))
    large = PupilFinder(0.85, 0.6, 4.0).find(frame, kp)
    assert large.valid
    assert large.area == pytest.approx(16 * small.area, rel=0.05)
    assert large.centre == pytest.approx((4 * small.centre[0] + 1.5, 4 * small.centre[1] + 1.5), abs=1.0)
