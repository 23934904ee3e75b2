"""Training-time rig randomisation: keypoints stay on what they label, names stay anatomical."""
import numpy as np
import pytest

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.training import rig_augment

K = {name: i for i, name in enumerate(BODYPARTS)}


def _frame(seed: int = 4, frame_id: int = 300):
    return SyntheticCamera(640, 480, seed=seed).render(frame_id)


def test_mirror_keeps_facemaps_anatomical_names():
    frame, truth = _frame()
    flipped, points = rig_augment.mirror(frame, truth)
    assert np.array_equal(flipped, frame[:, ::-1])
    seen = truth[:, 2] > 0
    assert np.array_equal(points[:, 2], truth[:, 2]) and np.allclose(points[seen, 1], truth[seen, 1])
    assert np.allclose(points[seen, 0], 639 - truth[seen, 0])
    # the synthetic face looks right: eye(front) and the nose lie right of eye(back); mirrored, left of it
    for name in ("eye(front)", "nose(tip)"):
        assert truth[K[name], 0] > truth[K["eye(back)"], 0]
        assert points[K[name], 0] < points[K["eye(back)"], 0]
    # each name still sits on the same pixels
    for x, y, v in truth[seen]:
        assert flipped[int(y), 639 - int(x)] == frame[int(y), int(x)]


@pytest.mark.parametrize("seed", range(6))
def test_view_moves_keypoints_with_the_pixels(seed):
    """Single bright pixels at the keypoints stay the brightest pixels near the moved keypoints."""
    rng = np.random.default_rng(seed)
    truth = np.ones((len(BODYPARTS), 3), np.float32)
    truth[:, :2] = np.stack([rng.uniform(40, 600, len(BODYPARTS)), rng.uniform(40, 440, len(BODYPARTS))], axis=1)
    frame = np.zeros((480, 640), np.float32)
    for x, y, _ in truth:
        frame[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 1.0
    truth[:, :2] = np.round(truth[:, :2])
    warped, points = rig_augment.view(frame, truth, rng, 1.0)
    assert points[:, 2].sum() >= 3
    for x, y, v in points:
        if v:
            assert warped[int(round(y)), int(round(x))] > 0.3


def test_objects_hide_what_they_cover_and_nothing_else():
    frame, truth = _frame()
    image = frame.astype(np.float32)
    hidden_any = False
    for k in range(20):
        drawn, points = rig_augment.objects(image, truth, np.random.default_rng(k), 1.0)
        changed = np.abs(drawn - image) > 1
        for (x, y, v), (_, _, now) in zip(truth, points):
            if v and not now:
                hidden_any = True
                assert changed[int(round(y)), int(round(x))]  # hidden: something was drawn over it
        assert (points[:, 2] <= truth[:, 2]).all()
    assert hidden_any


def test_augment_is_deterministic_and_keeps_the_frame_a_camera_frame():
    frame, truth = _frame()
    a = rig_augment.augment(frame, truth, np.random.default_rng(7), 1.0)
    b = rig_augment.augment(frame, truth, np.random.default_rng(7), 1.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.uint8 and a[0].ndim == 2 and a[1].shape == truth.shape
    assert rig_augment.augment(frame, truth, np.random.default_rng(7), 0.0)[0] is frame
