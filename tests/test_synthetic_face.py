"""The synthetic camera: a simulated mouse face whose true keypoints and behaviour are known."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from facestream.camera_adapters.synthetic.camera import LATENT_NAMES, SyntheticCamera
from facestream.camera_adapters.synthetic.face_model import FaceModel
from facestream.camera_adapters.synthetic.face_renderer import FaceRenderer
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from helpers import read_all

K = {name: i for i, name in enumerate(BODYPARTS)}
WHISKER_PAD = ("whisker(I)", "whisker(II)", "whisker(III)")


_CAMERAS: dict[tuple, SyntheticCamera] = {}


def _camera(seed: int, fps: float = 50.0, size: tuple[int, int] = (640, 480)) -> SyntheticCamera:
    """One camera per (seed, fps, size) for the whole module: its textures take a moment to draw."""
    key = (seed, fps, size)
    if key not in _CAMERAS:
        _CAMERAS[key] = SyntheticCamera(*size, fps=fps, seed=seed)
    return _CAMERAS[key]


def _latent_series(cam: SyntheticCamera, frames: range) -> dict[str, np.ndarray]:
    rows = [cam.latents(k) for k in frames]
    return {name: np.array([r[name] for r in rows]) for name in LATENT_NAMES}


def _episodes(on: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs where ``on`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def test_synthetic_is_deterministic_for_a_seed_and_differs_between_seeds():
    a = read_all(SyntheticCamera(fps=0, seed=7, frames=4))
    b = read_all(SyntheticCamera(fps=0, seed=7, frames=4))
    c = read_all(SyntheticCamera(fps=0, seed=8, frames=4))
    for fa, fb, fc in zip(a, b, c):
        assert np.array_equal(fa.pixels, fb.pixels) and np.array_equal(fa.truth, fb.truth)
        assert not np.array_equal(fa.pixels, fc.pixels)
        assert not np.array_equal(fa.truth, fc.truth)
    assert not np.array_equal(a[0].pixels, a[1].pixels)
    # any frame, in any order, without open(): the same pixels, truth and latents every time
    far = 10**6 + 17
    x, y = SyntheticCamera(seed=7), SyntheticCamera(seed=7)
    px, tx = x.render(far)
    x.render(3)
    assert np.array_equal(px, x.render(far)[0]) and np.array_equal(tx, y.render(far)[1])
    assert x.latents(far) == y.latents(far) != SyntheticCamera(seed=8).latents(far)
    assert list(x.latents(far)) == list(LATENT_NAMES)
    assert all(isinstance(v, float) and np.isfinite(v) for v in x.latents(far).values())


def test_synthetic_sensor_noise_is_fresh_every_frame():
    cam = _camera(0)
    residuals = []
    for k in range(6):
        img = cam.render(k)[0].astype(np.float32)
        residuals.append(img - cv2.GaussianBlur(img, (0, 0), 2.0))
    corr = [np.corrcoef(residuals[0][100:300, 50:250].ravel(), r[100:300, 50:250].ravel())[0, 1]
            for r in residuals[1:]]
    assert max(corr) < 0.9, "consecutive frames do not share a noise pattern"


def test_synthetic_seeds_draw_different_faces_that_fill_the_frame():
    w, h = 640, 480
    size, centre, eye_share = [], [], []
    for seed in range(10):
        truth = SyntheticCamera(w, h, seed=seed).model.pose(0.0).keypoints
        xy = truth[:, :2]
        eye = (xy[K["eye(back)"]] + xy[K["eye(front)"]]) / 2
        span = np.linalg.norm(xy[K["nose(r)"]] - eye)
        size.append(span)
        centre.append(np.delete(xy, K["paw"], axis=0).mean(axis=0))
        eye_share.append(np.linalg.norm(xy[K["eye(front)"]] - xy[K["eye(back)"]]) / span)
        assert xy[K["nose(r)"], 0] - xy[K["eye(back)"], 0] > 0.5 * w, "the face fills a good part of the frame"
    size, centre = np.array(size), np.array(centre)
    assert size.std() / size.mean() > 0.04, "the face's size varies between seeds"
    assert np.all(centre.std(axis=0) > 0.02 * np.array([w, h])), "so does its position"
    assert np.std(eye_share) > 0.01, "and its shape"
    assert np.all(np.abs(centre - [w / 2, h / 2]).max(axis=0) < 0.2 * np.array([w, h]))


@pytest.mark.parametrize("size", [(640, 480), (320, 240), (800, 450)])
@pytest.mark.parametrize("seed", [3, 4])  # 3 rests a paw in view; 4 keeps it below, behind a platform
def test_synthetic_truth_is_in_facemap_order_and_inside_the_frame(size, seed):
    w, h = size
    cam = SyntheticCamera(w, h, fps=50, seed=seed)
    paw_seen = set()
    covered = 0
    for k in range(0, 9000, 5):  # three minutes of motion
        truth = cam.model.pose(k / 50).keypoints
        assert truth.dtype == np.float32 and truth.shape == (N_KEYPOINTS, 3)
        vis = truth[:, 2]
        assert set(np.unique(vis)) <= {0.0, 1.0}
        face = np.delete(truth, K["paw"], axis=0)
        assert np.all((face[:, 0] >= 0) & (face[:, 0] <= w - 1)), "the face keypoints never leave the frame"
        assert np.all((face[:, 1] >= 0) & (face[:, 1] <= h - 1))
        grooming = cam.latents(k)["grooming"]
        if grooming == 0:
            hidden = cam.model.hidden_by_props(face[:, :2])
            assert np.array_equal(face[:, 2] == 0, hidden), "only the paw and the rig's props hide keypoints"
            if not cam.model.paw_rests_in_view:
                assert vis[K["paw"]] == 0 and truth[K["paw"], 1] > h - 1, "the paw rests below the frame"
        covered += int(np.sum(face[:, 2] == 0))
        if vis[K["paw"]]:
            x, y = truth[K["paw"], :2]
            assert 0 <= x <= w - 1 and 0 <= y <= h - 1
        paw_seen.add(bool(vis[K["paw"]]))
        # the face is in profile with the nose to the right of the eye
        assert truth[K["nose(tip)"], 0] > truth[K["whisker(I)"], 0] > truth[K["eye(front)"], 0]
    assert True in paw_seen and (False in paw_seen or cam.model.paw_rests_in_view)
    assert covered > 0, "the grooming paw covers keypoints"


def _patch(img: np.ndarray, x: float, y: float, r: int = 1) -> float:
    xi, yi = int(round(x)), int(round(y))
    return float(img[max(yi - r, 0):yi + r + 1, max(xi - r, 0):xi + r + 1].mean())


def _step(p: np.ndarray, q: np.ndarray, dist: float) -> np.ndarray:
    """The point ``dist`` pixels from p in the direction of q."""
    d = q - p
    return p + dist * d / np.linalg.norm(d)


@pytest.mark.parametrize("seed", [0, 6, 11])  # 6 has a bright background: its face edges are dark outside
def test_synthetic_draws_the_face_where_the_truth_says(seed):
    """Over many frames: the eye keypoints on the dark eye's rim, the nose tip, the nose bridge
    and the lower lip on the face's edge (whichever side is brighter: backgrounds range from
    black to bright), the pad brighter than the fur, the paw on a bright blob."""
    cam = _camera(seed)
    edges = {n: [] for n in ("eye(back)", "eye(front)", "eye(top)", "eye(bottom)", "nose(tip)", "lowerlip")}
    pad_vs_fur, bridge, eye_dark, highlight, paw = [], [], [], [], []
    for k in range(0, 3000, 13):
        img, truth = cam.render(k)
        img = img.astype(np.float32)
        xy, vis = truth[:, :2], truth[:, 2]
        eye = (xy[K["eye(back)"]] + xy[K["eye(front)"]]) / 2
        top, bottom = xy[K["eye(top)"]], xy[K["eye(bottom)"]]
        fur = _patch(img, *_step(top, bottom, -25), r=3)  # the forehead above the eye
        pad = np.round(xy[[K[n] for n in WHISKER_PAD]].mean(axis=0)).astype(int)
        pad_vs_fur.append(np.median(img[pad[1] - 6:pad[1] + 7, pad[0] - 6:pad[0] + 7]) - fur)
        if np.linalg.norm(top - bottom) > 0.45 * np.linalg.norm(xy[K["eye(front)"]] - xy[K["eye(back)"]]):
            for name in ("eye(back)", "eye(front)", "eye(top)", "eye(bottom)"):
                edge = xy[K[name]]
                edges[name].append(_patch(img, *_step(edge, eye, -4), r=0) - _patch(img, *_step(edge, eye, 4), r=0))
            eye_dark.append(fur - _patch(img, *eye, r=2))
            x0, y0 = np.floor(np.minimum(top, xy[K["eye(back)"]])).astype(int)
            x1, y1 = np.ceil(np.maximum(bottom, xy[K["eye(front)"]])).astype(int)
            highlight.append(img[y0:y1, x0:x1].max() - _patch(img, *eye, r=2))
        centre = xy[[K[n] for n in ("nose(top)", "nose(r)", "nose(tip)", "nose(bottom)")]].mean(axis=0)
        tip = xy[K["nose(tip)"]]
        edges["nose(tip)"].append(_patch(img, *_step(tip, centre, 6)) - _patch(img, *_step(tip, centre, -6)))
        lip, mouth = xy[K["lowerlip"]], xy[K["mouth"]]
        edges["lowerlip"].append(_patch(img, *_step(lip, mouth, 6)) - _patch(img, *_step(lip, mouth, -6)))
        nb, nose_top = xy[K["nosebridge"]], xy[K["nose(top)"]]
        normal = np.array([nose_top[1] - nb[1], nb[0] - nose_top[0]])  # points up, away from the face
        normal /= np.linalg.norm(normal)
        bridge.append([_patch(img, *(nb + d * normal)) for d in (8, 0, -8)])
        if vis[K["paw"]]:
            paw.append(_patch(img, *xy[K["paw"]], r=2) - fur)
    for name in ("eye(back)", "eye(front)", "eye(top)", "eye(bottom)"):
        assert np.median(edges[name]) > 8, f"{name}: lighter outside the eye than inside"
    for name in ("nose(tip)", "lowerlip"):
        assert abs(np.median(edges[name])) > 25, f"{name}: on the face's edge"
    assert np.median(pad_vs_fur) > 10, "the whisker pad is brighter than the fur"
    assert len(eye_dark) > 100 and np.percentile(eye_dark, 10) > 10, "the open eye is dark"
    assert np.percentile(highlight, 10) > 60, "the eye has a specular highlight"
    outside, at, inside = np.median(bridge, axis=0)
    assert abs(inside - outside) > 30 and 0.2 < (at - outside) / (inside - outside) < 0.8, "nosebridge on the edge"
    if paw:
        assert np.percentile(paw, 10) > 20, "the paw keypoint is on the bright paw"


def test_synthetic_grooming_paw_covers_the_keypoints_it_hides():
    cam = _camera(0)
    lat = _latent_series(cam, range(0, 9000, 3))
    raised = np.flatnonzero(lat["grooming"] > 0.9)[::6] * 3
    assert len(raised) > 20
    hidden = 0
    for k in raised.tolist():
        pose = cam.model.pose(cam.time_of(k))
        img, truth = cam.render(k)
        assert np.array_equal(truth, pose.keypoints)
        assert truth[K["paw"], 2] == 1, "a raised paw is visible"
        assert _patch(img.astype(np.float32), *truth[K["paw"], :2], r=2) > 120, "on the bright paw"
        on_canvas = truth[:, :2] + cam.model.margin - np.array(pose.shift)
        covered = pose.paw.covers(on_canvas)
        covered[K["paw"]] = False
        assert np.array_equal(truth[:, 2] == 0, covered), "exactly the keypoints under the paw are hidden"
        hidden += int(covered.sum())
    assert hidden > 0


@pytest.mark.parametrize("seed", [0, 5])
def test_synthetic_head_texture_moves_with_the_truth(seed):
    """The fur drawn once and shifted by the head's motion moves exactly as the keypoints do."""
    cam = _camera(seed)
    ref_img, ref_truth = cam.render(0)
    ref_nb = ref_truth[K["nosebridge"], :2]
    cx, cy = np.round(ref_nb + np.array([-130.0, -45.0]) * cam.model.scale).astype(int)
    r, search = 30, 8
    template = ref_img[cy - r:cy + r, cx - r:cx + r]
    moved = 0
    for k in range(1, 400, 3):
        img, truth = cam.render(k)
        dx, dy = np.round(truth[K["nosebridge"], :2] - ref_nb).astype(int)
        moved += (dx, dy) != (0, 0)
        window = img[cy - r - search:cy + r + search, cx - r - search:cx + r + search]
        score = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        best_y, best_x = np.unravel_index(np.argmax(score), score.shape)
        assert (best_x - search, best_y - search) == (dx, dy)
    assert moved > 20


def _peak_hz(signal: np.ndarray, fps: float) -> float:
    x = (signal - signal.mean()) * np.hanning(len(signal))
    power = np.abs(np.fft.rfft(x, n=8 * len(x))) ** 2
    return float(np.fft.rfftfreq(8 * len(x), 1.0 / fps)[np.argmax(power)])


@pytest.mark.parametrize("seed", [0, 9])
def test_synthetic_whisking_comes_in_bouts_of_5_to_15_hz(seed):
    fps = 200.0
    lat = _latent_series(_camera(seed, fps=fps, size=(160, 120)), range(int(120 * fps)))
    amp = lat["whisk_amplitude"]
    bouts = _episodes(amp > 0)
    assert len(bouts) >= 8, "whisking starts and stops"
    assert 0.1 < np.mean(amp > 0) < 0.7, "with pauses between bouts"
    peaks, long = [], [(a, b) for a, b in bouts if b - a >= 0.6 * fps]
    assert len(long) >= 4
    for a, b in long:
        peaks.append(_peak_hz(lat["whisk_angle"][a:b], fps))
        assert 5.0 <= peaks[-1] <= 15.0
    assert np.ptp([amp[a:b].max() for a, b in bouts]) > 5.0, "bouts differ in amplitude (degrees)"
    # the phase is that of the angle: angle = setpoint + amplitude * cos(phase)
    rebuilt = lat["whisk_setpoint"] + amp * np.cos(lat["whisk_phase"])
    assert np.allclose(rebuilt, lat["whisk_angle"])
    assert np.all(amp[~(amp > 0)] == 0)


@pytest.mark.parametrize("seed", [0, 9])
def test_synthetic_sniffing_is_4_to_12_hz_and_moves_the_nose(seed):
    fps = 200.0
    cam = _camera(seed, fps=fps, size=(160, 120))
    lat = _latent_series(cam, range(int(60 * fps)))
    window = int(2 * fps)
    for a in range(0, len(lat["sniff"]) - window, window):
        assert 4.0 <= _peak_hz(lat["sniff"][a:a + window], fps) <= 12.0
    tips = np.array([cam.model.pose(cam.time_of(k)).keypoints[K["nose(tip)"], 0] for k in range(0, 2000, 2)])
    heads = np.array([lat["head_x"][k] for k in range(0, 2000, 2)])
    moving = tips - np.round(heads)
    assert np.corrcoef(moving, lat["sniff"][0:2000:2])[0, 1] > 0.8, "the nose moves with the sniff signal"


def test_synthetic_blinks_close_the_drawn_eye():
    cam = _camera(5)
    lat = _latent_series(cam, range(0, 6000))
    blinks = [(a, b) for a, b in _episodes(lat["blink"] > 0.8) if lat["grooming"][a:b].max() == 0]
    assert len(blinks) >= 5, "the mouse blinks"
    assert all(b - a < 0.4 * 50 for a, b in blinks), "blinks are brief"
    for a, b in blinks[:5]:
        k = a + int(np.argmax(lat["blink"][a:b]))
        img, truth = cam.render(k)
        xy = truth[:, :2]
        gap = np.linalg.norm(xy[K["eye(top)"]] - xy[K["eye(bottom)"]])
        assert gap < 0.25 * np.linalg.norm(xy[K["eye(front)"]] - xy[K["eye(back)"]])
        eye = (xy[K["eye(back)"]] + xy[K["eye(front)"]]) / 2
        before = a - 10  # the open eye, a moment before the blink
        assert lat["blink"][before] < 0.1
        open_img, open_truth = cam.render(before)
        open_eye = (open_truth[K["eye(back)"], :2] + open_truth[K["eye(front)"], :2]) / 2
        lid = _patch(img.astype(np.float32), *eye, r=2)
        assert lid > _patch(open_img.astype(np.float32), *open_eye, r=2) + 15, "the lid is down: fur where the eye was"


def test_synthetic_licking_grooming_pupil_head_and_light_vary():
    cam = _camera(0)
    lat = _latent_series(cam, range(0, 9000, 2))
    assert len(_episodes(lat["grooming"] > 0)) >= 3, "grooming episodes"
    assert len(_episodes(lat["lick"] > 0.5)) >= 10, "licks"
    assert np.all((lat["lick"] == 0) | (lat["grooming"] < 1)), "no licking while the paws groom"
    assert np.ptp(lat["pupil"]) > 0.2 and np.ptp(lat["illumination"]) > 0.1
    assert np.ptp(lat["head_x"]) > 2 and np.ptp(lat["head_y"]) > 2
    # an open mouth lowers the lower lip
    k_open = int(np.argmax(lat["lick"])) * 2
    k_shut = int(np.flatnonzero((lat["lick"] == 0) & (lat["grooming"] == 0))[0]) * 2
    drop = []
    for k in (k_open, k_shut):
        kp = cam.model.pose(cam.time_of(k)).keypoints
        drop.append(kp[K["lowerlip"], 1] - kp[K["nose(bottom)"], 1])
    assert drop[0] - drop[1] > 8 * cam.model.scale


def test_synthetic_paces_frames_on_an_absolute_schedule():
    with SyntheticCamera(160, 120, fps=100, seed=0) as cam:
        t0 = time.monotonic()
        frames = [cam.read() for _ in range(30)]
        elapsed = time.monotonic() - t0
    assert 0.2 < elapsed < 1.5
    for f in frames:
        assert f.t_camera_ns == round(f.frame_id * 1e7)
        assert f.truth is not None and f.truth.shape == (N_KEYPOINTS, 3)


def test_synthetic_late_reads_drop_frames_and_count_them():
    with SyntheticCamera(160, 120, fps=100, seed=0) as cam:
        prev = cam.read()
        for _ in range(4):
            time.sleep(0.05)  # five frame periods
            f = cam.read()
            assert f.dropped_before >= 3
            assert f.frame_id - prev.frame_id == f.dropped_before + 1
            assert f.t_camera_ns == round(f.frame_id * 1e7)
            prev = f


def test_synthetic_frame_limit_counts_dropped_frames():
    with SyntheticCamera(160, 120, fps=100, seed=0, frames=10) as cam:
        first = cam.read()
        time.sleep(0.2)
        last = cam.read()
        assert cam.read() is None
    assert (first.frame_id, last.frame_id) == (0, 9)
    assert 1 + first.dropped_before + 1 + last.dropped_before == 10


def test_synthetic_unpaced_never_drops():
    with SyntheticCamera(160, 120, fps=0, seed=0, frames=5) as cam:
        assert cam.fps == 0
        frames = []
        while (f := cam.read()) is not None:
            frames.append(f)
            time.sleep(0.01)
    assert [f.frame_id for f in frames] == list(range(5))
    assert all(f.dropped_before == 0 for f in frames)


def test_synthetic_rigs_vary_from_black_to_bright_between_seeds():
    """The background (the frame's top-right corner, in front of the forehead) and the overall
    exposure vary between seeds: a tracker must not learn that faces sit on black."""
    corners, means = [], []
    for seed in range(20):
        img = SyntheticCamera(640, 480, seed=seed).render(0)[0]
        corners.append(np.median(img[:30, -30:]))
        means.append(img.mean())
    assert min(corners) < 25 and max(corners) > 100, "backgrounds from black to bright"
    assert np.std(means) > 15, "the exposure varies"


@pytest.mark.parametrize("seed, darker", [(2, True), (6, True), (12, False)])
def test_synthetic_whiskers_are_thin_lines_that_contrast_with_the_pad(seed, darker):
    """Near their roots the whiskers are darker than the fur beside them (light fur, dark
    whiskers: seeds 2 and 6) or brighter (seed 12); a few pixels aside the fur shows again."""
    cam = _camera(seed)
    renderer = FaceRenderer(cam.model)
    diffs = []
    for k in range(0, 2000, 97):
        img = cam.render(k)[0].astype(np.float32)
        paths = renderer.whisker_paths(cam.model.pose(cam.time_of(k)))
        for a, b in zip(paths[:, 1], paths[:, 2]):
            d = (b - a) / np.linalg.norm(b - a)
            side = np.array([-d[1], d[0]])
            for f in (0.3, 0.6):
                p = a + f * (b - a)
                diffs.append(_patch(img, *p, r=0) - 0.5 * (_patch(img, *(p + 4 * side), r=0)
                                                          + _patch(img, *(p - 4 * side), r=0)))
    assert (np.median(diffs) < -8) if darker else (np.median(diffs) > 8)


def test_synthetic_props_never_move_keypoints_only_hide_them():
    hidden = 0
    for seed in range(12):
        with_props, bare = FaceModel(640, 480, seed), FaceModel(640, 480, seed, props=False)
        assert not bare.props
        for t in (0.0, 7.3, 61.1):
            a, b = with_props.pose(t).keypoints, bare.pose(t).keypoints
            assert np.array_equal(a[:, :2], b[:, :2])
            assert np.array_equal(a[:, 2], b[:, 2] * ~with_props.hidden_by_props(a[:, :2]))
            hidden += int(np.sum(a[:, 2] < b[:, 2]))
    assert hidden > 0, "a prop in front (seed 0's platform) hides what is behind it"
    kinds = {p.kind for seed in range(12) for p in FaceModel(640, 480, seed).props}
    assert kinds == {"platform", "bar", "spout"}


def test_synthetic_fast_whisking_blurs_during_the_exposure():
    cam = _camera(0)
    sweeps = np.array([cam.model.pose(cam.time_of(k)).whisk_sweep for k in range(0, 3000)])
    lat = _latent_series(cam, range(0, 3000))
    assert np.all(np.abs(sweeps[lat["whisk_amplitude"] == 0]) < 1.0), "still whiskers are sharp"
    assert np.abs(sweeps).max() > 2.0, "fast ones sweep degrees within one exposure"
