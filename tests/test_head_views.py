"""3D views of synthetic heads: keypoints on what they label, hidden behind the head, seen from
the cameras rigs use."""
import numpy as np
import pytest

from facestream.camera_adapters.synthetic.head_views import Head, camera_at, render, render_view
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.training.datasets import TrainingError, synthetic_frames

K = {name: i for i, name in enumerate(BODYPARTS)}
EYE = [K[n] for n in ("eye(front)", "eye(back)", "eye(top)", "eye(bottom)")]
NOSE = [K[n] for n in ("nose(top)", "nose(r)", "nose(tip)", "nose(bottom)")]


def _view(seed: int, azimuth: float, elevation: float = 0.0, **kw):
    head = Head(seed)
    camera = camera_at(head, 640, 480, azimuth, elevation, **kw)
    return render(head, camera, 640, 480, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", range(3))
def test_a_profile_shows_the_labelled_side_nose_to_the_right(seed):
    frame, kp = _view(seed, azimuth=0.0)
    seen = kp[:, 2] > 0
    assert seen[EYE + NOSE + [K["whisker(I)"], K["whisker(II)"], K["whisker(III)"], K["nosebridge"]]].all()
    assert not seen[K["paw"]]
    assert kp[K["eye(front)"], 0] > kp[K["eye(back)"], 0] and kp[K["eye(top)"], 1] < kp[K["eye(bottom)"], 1]
    assert kp[NOSE, 0].min() > kp[EYE, 0].max()  # the nose lies ahead of the eye
    assert kp[K["nose(r)"], 0] == kp[NOSE, 0].max()  # nose(r) is its front
    # the eye's four points ring a dark eye on a lighter face
    centre = kp[EYE, :2].mean(0).round().astype(int)
    assert frame[centre[1] - 1:centre[1] + 2, centre[0] - 1:centre[0] + 2].min() < 40
    face = frame[int(kp[K["whisker(II)"], 1]), int(kp[K["whisker(II)"], 0])]
    assert face > frame[centre[1], centre[0]]


@pytest.mark.parametrize("seed", range(3))
def test_the_head_hides_the_labelled_side_from_a_camera_on_the_other_side(seed):
    _, kp = _view(seed, azimuth=180.0)
    assert not kp[EYE, 2].any() and not kp[[K["whisker(I)"], K["whisker(II)"], K["whisker(III)"]], 2].any()
    assert (kp[kp[:, 2] == 0, :2] == 0).all()  # what is not in view has no position


def test_a_camera_in_front_of_the_nose_sees_it_in_the_middle_of_the_picture():
    _, kp = _view(0, azimuth=85.0, elevation=-10.0, fill=0.5)
    assert kp[K["nose(r)"], 2] and kp[K["nose(tip)"], 2]
    assert abs(kp[K["nose(r)"], 0] - 320) < 200  # the camera looks along the head at it


@pytest.mark.parametrize("seed", range(3))
def test_a_camera_below_the_chin_sees_the_lower_lip_but_not_the_top_of_the_snout(seed):
    _, kp = _view(seed, azimuth=60.0, elevation=-60.0, fill=0.5)
    assert kp[K["lowerlip"], 2] and not kp[K["nosebridge"], 2] and not kp[K["nose(top)"], 2]


def test_keypoints_out_of_the_frame_are_not_in_view():
    _, kp = _view(1, azimuth=0.0, fill=2.5, along=1.0)  # a close-up on the nose: the eye is off the frame
    assert kp[K["nose(r)"], 2] and not kp[EYE, 2].any()
    seen = kp[:, 2] > 0
    assert ((kp[seen, 0] >= 0) & (kp[seen, 0] <= 639) & (kp[seen, 1] >= 0) & (kp[seen, 1] <= 479)).all()


def test_views_are_deterministic_per_seed_and_index_and_differ_between_them():
    a, b = render_view(5, 2, 320, 240), render_view(5, 2, 320, 240)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (240, 320) and a[0].dtype == np.uint8 and a[1].shape == (len(BODYPARTS), 3)
    assert not np.array_equal(a[0], render_view(5, 3, 320, 240)[0])
    assert not np.array_equal(a[0], render_view(6, 2, 320, 240)[0])


def test_the_views_bank_caches_and_refuses_unknown_kinds(tmp_path):
    bank = synthetic_frames(160, 120, 2, 2, tmp_path, kind="views")
    assert len(bank) == 4 and bank.frame(3).shape == (120, 160) and bank.folder.name.startswith("views-160x120-2x2-")
    assert np.array_equal(bank.frame(2), render_view(1, 0, 160, 120)[0])
    assert synthetic_frames(160, 120, 2, 2, tmp_path, kind="views").folder == bank.folder
    with pytest.raises(TrainingError, match="unknown kind"):
        synthetic_frames(160, 120, 2, 2, tmp_path, kind="cartoons")
