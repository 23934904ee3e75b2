"""Camera adapters: one contract every adapter meets, then what each kind promises on its own."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facestream.camera_adapters.base import Camera, CameraError
from facestream.camera_adapters.registry import SPEC_FORMS, make_camera
from facestream.camera_adapters.synthetic import SyntheticCamera
from facestream.camera_adapters.video import VideoFileCamera
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS

K = {name: i for i, name in enumerate(BODYPARTS)}
WHISKER_PAD = ("whisker(I)", "whisker(II)", "whisker(III)")
VIDEO_FPS = 25.0
VIDEO_FRAMES = 12
VIDEO_SIZE = (160, 120)  # width, height


def _video_frame(k: int) -> np.ndarray:
    """A BGR frame with a gradient, a colour cast and a square that moves with k."""
    w, h = VIDEO_SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.linspace(20, 120, w, dtype=np.uint8)[None, :]
    img[:, :, 1] = 60
    img[:, :, 2] = np.linspace(40, 200, h, dtype=np.uint8)[:, None]
    x = 8 + 10 * k
    img[30:70, x:x + 30] = (240, 250, 255)
    return img


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_SIZE, True)
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames = [_video_frame(k) for k in range(VIDEO_FRAMES)]
    path = tmp_path_factory.mktemp("video") / "rig:session 1.avi"  # a colon and a space on purpose
    _write_video(path, frames)
    return path, frames


FINITE_SOURCES = {
    "synthetic": (lambda video: SyntheticCamera(160, 120, fps=0, seed=1, frames=9), 9),
    "video": (lambda video: VideoFileCamera(video[0], realtime=False), VIDEO_FRAMES),
}


@pytest.fixture(params=sorted(FINITE_SOURCES))
def finite_camera(request, video_file) -> tuple[Camera, int]:
    make, n = FINITE_SOURCES[request.param]
    return make(video_file), n


# --- the contract -------------------------------------------------------------------------------


def test_contract_reads_a_finite_source_to_its_end(finite_camera):
    cam, n = finite_camera
    with cam:
        h, w = cam.shape
        assert cam.fps >= 0
        assert cam.describe() == {"name": cam.name, "height": h, "width": w, "fps": float(cam.fps)}
        frames = []
        while (f := cam.read()) is not None:
            frames.append(f)
            assert len(frames) <= n
        assert cam.read() is None
    assert len(frames) == n
    for f in frames:
        assert f.pixels.dtype == np.uint8 and f.pixels.shape == (h, w)
        assert f.dropped_before == 0
    ids = [f.frame_id for f in frames]
    assert ids[0] == 0 and all(b > a for a, b in zip(ids, ids[1:]))
    captures = [f.t_capture_ns for f in frames]
    assert all(b >= a for a, b in zip(captures, captures[1:]))


def test_contract_close_is_safe_twice_and_read_needs_open(finite_camera):
    cam, _ = finite_camera
    cam.close()
    with pytest.raises(CameraError):
        cam.read()
    cam.open()
    assert cam.read() is not None
    cam.close()
    cam.close()
    with pytest.raises(CameraError):
        cam.read()


def test_contract_reopen_starts_again(finite_camera):
    cam, _ = finite_camera
    with cam:
        first = cam.read()
        cam.read()
    with cam:
        again = cam.read()
    assert again.frame_id == 0
    assert np.array_equal(first.pixels, again.pixels)


# --- synthetic ----------------------------------------------------------------------------------


def _read_all(cam: Camera) -> list:
    with cam:
        return list(iter(cam.read, None))


def test_synthetic_is_deterministic_for_a_seed_and_differs_between_seeds():
    a = _read_all(SyntheticCamera(fps=0, seed=7, frames=4))
    b = _read_all(SyntheticCamera(fps=0, seed=7, frames=4))
    c = _read_all(SyntheticCamera(fps=0, seed=8, frames=4))
    for fa, fb, fc in zip(a, b, c):
        assert np.array_equal(fa.pixels, fb.pixels) and np.array_equal(fa.truth, fb.truth)
        assert not np.array_equal(fa.pixels, fc.pixels)
        assert not np.array_equal(fa.truth, fc.truth)
    assert not np.array_equal(a[0].pixels, a[1].pixels)


@pytest.mark.parametrize("size", [(640, 480), (320, 240), (800, 450)])
def test_synthetic_truth_is_in_facemap_order_and_inside_the_frame(size):
    w, h = size
    cam = SyntheticCamera(w, h, fps=50, seed=3)
    paw_seen = set()
    for k in range(0, 3000, 5):  # one minute of motion
        truth = cam.model.pose(k / 50).keypoints
        assert truth.dtype == np.float32 and truth.shape == (N_KEYPOINTS, 3)
        vis = truth[:, 2]
        assert set(np.unique(vis)) <= {0.0, 1.0}
        assert np.all(np.delete(vis, K["paw"]) == 1)
        inside = truth[vis == 1]
        assert np.all((inside[:, 0] >= 0) & (inside[:, 0] <= w - 1))
        assert np.all((inside[:, 1] >= 0) & (inside[:, 1] <= h - 1))
        paw_seen.add(bool(vis[K["paw"]]))
        # the face is in profile with the nose to the right of the eye
        assert truth[K["nose(tip)"], 0] > truth[K["whisker(I)"], 0] > truth[K["eye(front)"], 0]
    assert paw_seen == {True, False}


def _patch(img: np.ndarray, x: float, y: float, r: int = 1) -> float:
    xi, yi = int(round(x)), int(round(y))
    return float(img[yi - r:yi + r + 1, xi - r:xi + r + 1].mean())


def _step(p: np.ndarray, q: np.ndarray, dist: float) -> np.ndarray:
    """The point ``dist`` pixels from p in the direction of q."""
    d = q - p
    return p + dist * d / np.linalg.norm(d)


@pytest.mark.parametrize("seed", [0, 5])
def test_synthetic_draws_the_face_where_the_truth_says(seed):
    cam = SyntheticCamera(fps=50, seed=seed)
    checked_open = checked_paw = 0
    for k in range(0, 1500, 7):
        img, truth = cam.render(k)
        img = img.astype(np.float32)
        xy = truth[:, :2]
        eye = (xy[K["eye(back)"]] + xy[K["eye(front)"]]) / 2
        top, bottom = xy[K["eye(top)"]], xy[K["eye(bottom)"]]
        pad = np.mean([_patch(img, *xy[K[n]], r=2) for n in WHISKER_PAD])
        assert pad > 140
        if np.linalg.norm(top - bottom) > 40:  # eye open
            checked_open += 1
            assert _patch(img, *eye) < 45, "the eye centre is dark"
            assert pad - _patch(img, *eye) > 100
            x0, y0 = np.floor(xy[[K["eye(back)"], K["eye(top)"]]].min(0)).astype(int)
            x1, y1 = np.ceil(xy[[K["eye(front)"], K["eye(bottom)"]]].max(0)).astype(int)
            assert img[y0:y1, x0:x1].max() > 220, "the specular highlight is in the eye"
            for edge in (top, bottom, xy[K["eye(back)"]], xy[K["eye(front)"]]):
                assert _patch(img, *_step(edge, eye, 4), r=0) < 60, "inside the eyelid is dark"
                assert _patch(img, *_step(edge, eye, -3), r=0) > 90, "outside the eyelid is light"
        tip = xy[K["nose(tip)"]]
        assert _patch(img, tip[0] + 8, tip[1], r=1) < 60, "the background is just in front of the nose"
        assert _patch(img, tip[0] - 6, tip[1] - 4, r=1) > 100, "the nose is just behind its tip"
        if truth[K["paw"], 2]:
            checked_paw += 1
            assert _patch(img, *xy[K["paw"]], r=2) > 140
    assert checked_open > 150
    assert checked_paw > 0


@pytest.mark.parametrize("seed", [0, 5])
def test_synthetic_nosebridge_is_on_the_edge_of_the_head(seed):
    cam = SyntheticCamera(fps=50, seed=seed)
    profiles = []
    for k in range(0, 1500, 11):
        img, truth = cam.render(k)
        x, y = truth[K["nosebridge"], :2]
        profiles.append([_patch(img.astype(np.float32), x, y + d) for d in (-10, 0, 10)])
    above, at, below = np.median(profiles, axis=0)
    assert below - above > 80
    assert 0.3 < (at - above) / (below - above) < 0.7


@pytest.mark.parametrize("seed", [0, 5])
def test_synthetic_head_texture_moves_with_the_truth(seed):
    """The fur drawn once and shifted by the head's jitter moves exactly as the keypoints do."""
    cam = SyntheticCamera(fps=50, seed=seed)
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


# --- video file ---------------------------------------------------------------------------------


def test_video_delivers_every_written_frame_in_grayscale(video_file):
    path, written = video_file
    with VideoFileCamera(path, realtime=False) as cam:
        assert cam.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0])
        assert cam.fps == pytest.approx(VIDEO_FPS)
        frames = list(iter(cam.read, None))
    assert [f.frame_id for f in frames] == list(range(VIDEO_FRAMES))
    expected_ns = [k * 1e9 / VIDEO_FPS for k in range(VIDEO_FRAMES)]
    assert [f.t_camera_ns for f in frames] == pytest.approx(expected_ns, abs=1e6)
    gray = [cv2.cvtColor(w, cv2.COLOR_BGR2GRAY).astype(np.float32) for w in written]
    for f in frames:
        errors = [np.abs(f.pixels.astype(np.float32) - g).mean() for g in gray]
        assert errors[f.frame_id] < 6, "codec loss only"
        assert int(np.argmin(errors)) == f.frame_id
    # grayscale as Facemap converts it, not another channel mix
    blue_only = np.abs(frames[0].pixels.astype(np.float32) - written[0][:, :, 0]).mean()
    assert blue_only > 3 * np.abs(frames[0].pixels.astype(np.float32) - gray[0]).mean()


def test_video_realtime_paces_at_the_file_rate(video_file):
    with VideoFileCamera(video_file[0], realtime=True) as cam:
        t0 = time.monotonic()
        n = len(list(iter(cam.read, None)))
        elapsed = time.monotonic() - t0
    assert n == VIDEO_FRAMES
    expected = (VIDEO_FRAMES - 1) / VIDEO_FPS
    assert expected - 0.02 < elapsed < expected + 0.5


def test_video_loop_keeps_counting(video_file):
    with VideoFileCamera(video_file[0], realtime=False, loop=True) as cam:
        frames = [cam.read() for _ in range(2 * VIDEO_FRAMES + 3)]
    ids = [f.frame_id for f in frames]
    assert ids == list(range(len(frames)))
    times = [f.t_camera_ns for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert np.array_equal(frames[0].pixels, frames[VIDEO_FRAMES].pixels)


def _one_line_naming(err: CameraError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message and str(path) in message


def test_video_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.avi"
    with pytest.raises(CameraError) as err:
        VideoFileCamera(missing).open()
    _one_line_naming(err.value, missing)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video\n" * 200)
    with pytest.raises(CameraError) as err:
        VideoFileCamera(garbage).open()
    _one_line_naming(err.value, garbage)

    empty = tmp_path / "empty.avi"
    _write_video(empty, [])
    if not empty.exists():
        empty.write_bytes(b"")
    with pytest.raises(CameraError) as err:
        VideoFileCamera(empty).open()
    _one_line_naming(err.value, empty)


# --- registry -----------------------------------------------------------------------------------


def test_registry_builds_each_kind(video_file):
    cam = make_camera("synthetic", width=320, height=240, fps=30, seed=2, frames=3)
    assert isinstance(cam, SyntheticCamera) and cam.shape == (240, 320) and cam.fps == 30
    assert len(_read_all(cam)) == 3

    path = video_file[0]
    assert ":" in path.name
    cam = make_camera(f"video:{path}", realtime=False)
    assert isinstance(cam, VideoFileCamera) and cam.path == path and not cam.realtime
    assert len(_read_all(cam)) == VIDEO_FRAMES
    assert SPEC_FORMS[:2] == ("synthetic", "video:PATH")


@pytest.mark.parametrize("spec", ["webcam0", "", "synthetic:3", "video:", "pylonx:12"])
def test_registry_rejects_bad_specs_in_one_line(spec):
    with pytest.raises(CameraError) as err:
        make_camera(spec)
    message = str(err.value)
    assert "\n" not in message
    if spec in ("webcam0", "", "pylonx:12"):
        assert all(form in message for form in SPEC_FORMS)
