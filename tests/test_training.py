"""Tracker training and evaluation: targets, loss, resumable runs, model files, Facemap's refined
data, the error metrics and the train-tracker / eval / models commands.

Every training run here is real (torch, files on disk) but tiny: small synthetic banks and a few
steps of batch 2, so that the file runs in well under a minute on two cores.
"""
from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.training.datasets import (
    EVAL_SEED_START,
    TrainingError,
    TrainingSet,
    load_refined_data,
    make_sample,
    synthetic_frames,
    to_cells,
)
from facestream.engines.decode import decode
from facestream.engines.training.evaluation import keypoint_metrics
from facestream.engines.model_files import PARAMS_NAME, STATE_NAME, load_model
from facestream.engines.preprocess import make_geometry, preprocess
from facestream.engines.tracker import load_tracker
from facestream.engines.training.tracker_training import CHECKPOINT_NAME, TrainConfig, Trainer, heatmap_targets
from facestream.streamer.cli import main

from helpers import Payload

TINY = dict(init="scratch", batch=2, synthetic_seeds=2, frames_per_seed=2, width=160, height=120, augment=0.0)


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    """Caches (synthetic banks, ONNX exports) and ~/.facemap in a folder of this module's own."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
        mp.setenv("HOME", str(home))
        yield home


@pytest.fixture
def keep_signals():
    """The CLI's training command installs Ctrl-C handlers; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def decoded(cells: np.ndarray, geometry) -> np.ndarray:
    """Frame pixels (K, 2) that decode() reads from perfect target maps for ``cells`` (K, 2)."""
    heat, row, col, _ = heatmap_targets(torch.from_numpy(cells)[None])
    return decode(heat.numpy(), row.numpy(), col.numpy(), geometry)[0, :, :2]


# ---------------------------------------------------------------- targets and geometry


@pytest.mark.parametrize(
    "frame_shape, bbox",
    [((480, 640), None), ((240, 320), (30, 200, 40, 300)), ((300, 200), None), ((480, 640), (101, 357, 250, 611))],
)
def test_targets_decode_back_to_the_keypoints(frame_shape, bbox):
    geometry = make_geometry(frame_shape, bbox)
    row1, row2, col1, col2 = geometry.crop
    rng = np.random.default_rng(1)
    xy = np.stack([rng.uniform(col1, col2 - 1, 40), rng.uniform(row1, row2 - 1, 40)], axis=1).astype(np.float32)
    err = np.abs(decoded(to_cells(xy, geometry), geometry) - xy).max()
    assert err < 0.1, err


def test_training_input_is_the_inference_input_and_its_targets_decode_to_the_truth():
    frame, truth = SyntheticCamera(640, 480, fps=50, seed=3).render(77)
    image, cells, visible = make_sample(frame, truth, np.random.default_rng(0), strength=0.0)
    geometry = make_geometry(frame.shape)
    np.testing.assert_array_equal(image, preprocess(frame, geometry))
    assert visible.tolist() == (truth[:, 2] > 0).tolist()
    err = np.abs(decoded(cells, geometry)[visible] - truth[visible, :2]).max()
    assert err < 0.1, err


def test_augmented_targets_move_with_the_pixels():
    """Bright discs drawn at the keypoints: after a random mirror, view, zoom, rotation and shift,
    every target that is still in view lies on a bright disc of the augmented input (a float
    square, as Facemap's labelled frames are: the geometry alone, no light or sensor)."""
    rng = np.random.default_rng(2)
    truth = np.ones((len(BODYPARTS), 3), np.float32)
    truth[:, :2] = np.stack([rng.uniform(20, 460, len(BODYPARTS)), rng.uniform(20, 460, len(BODYPARTS))], axis=1)
    frame = np.zeros((480, 480), np.float32)
    for x, y, _ in truth:
        cv2.circle(frame, (int(round(x)), int(round(y))), 14, 1.0, -1)  # large enough to survive a zoom to 45 %
    in_view = 0
    for k in range(8):
        image, cells, visible = make_sample(frame, truth, np.random.default_rng(k), strength=2.0)
        assert image.shape == (256, 256) and image.dtype == np.float32
        rows, cols = np.round(cells[visible] * 4).astype(int).T
        assert (image[rows, cols] > 0.5 * image.max()).all()
        in_view += int(visible.sum())
    assert in_view > 8 * len(BODYPARTS) // 2


# ---------------------------------------------------------------- training runs


def test_a_few_steps_lower_the_loss(tmp_path):
    trainer = Trainer.start(TrainConfig(out=str(tmp_path / "run"), steps=12, lr=2e-3, **TINY))
    losses = [trainer.train_step() for _ in range(12)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_a_run_trains_on_profiles_and_3d_views_together(tmp_path):
    config = TrainConfig(out=str(tmp_path / "run"), steps=2, data=("synthetic", "views"), view_animals=2,
                         views_per_animal=3, **TINY)
    trainer = Trainer.start(config)
    assert [len(source) for source in trainer.data.sources] == [4, 6]
    assert [source.folder.name.split("-")[0] for source in trainer.data.sources] == ["synthetic", "views"]
    assert trainer.run().complete and trainer.config.data == ("synthetic", "views")
    assert load_model(tmp_path / "run").synthetic_only  # the 3D views are synthetic faces too


def test_a_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    config = TrainConfig(out=str(tmp_path / "whole"), steps=6, checkpoint_every=100, seed=4, **{**TINY, "augment": 1.0})
    whole = Trainer.start(config)
    whole.run()

    cut = Trainer.start(replace(config, out=str(tmp_path / "cut")))
    first = cut.run(should_stop=lambda: cut.step >= 3)
    assert (first.step, first.complete) == (3, False)
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file()
    del cut
    resumed = Trainer.resume(tmp_path / "cut")
    assert resumed.step == 3
    rest = resumed.run()
    assert rest.complete
    assert rest.losses == whole.losses
    for key, value in whole.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_the_saved_model_loads_as_a_facemap_model(tmp_path):
    out = tmp_path / "model"
    Trainer.start(TrainConfig(out=str(out), steps=2, command="facestream train-tracker --steps 2", **TINY)).run()
    params = torch.load(out / PARAMS_NAME, weights_only=True)
    state = torch.load(out / STATE_NAME, weights_only=True)
    assert params["params"]["channels"] == [16, 32, 64, 128, 200]
    marker = params["facestream"]
    assert marker["trained"] is True and marker["steps"] == 2 and marker["seed"] == 0
    assert marker["command"] == "facestream train-tracker --steps 2" and marker["name"] == "model"
    assert all(v.is_contiguous() for v in state.values())
    model = load_model(out)
    assert model.trained and model.name == "model"
    tracker = load_tracker("onnx", out)
    keypoints = tracker.infer(SyntheticCamera(320, 240, fps=50, seed=EVAL_SEED_START).render(0)[0])
    assert keypoints.shape == (1, len(BODYPARTS), 3) and np.isfinite(keypoints).all()
    with pytest.raises(TrainingError, match="--resume"):
        Trainer.start(TrainConfig(out=str(out), steps=2, **TINY))


def test_training_refuses_evaluation_seeds():
    with pytest.raises(TrainingError, match="evaluation"):
        synthetic_frames(160, 120, EVAL_SEED_START + 1, 1, Path("/nonexistent"))


# ---------------------------------------------------------------- Facemap's refined data


def refined_dict(n: int = 3, side: int = 100) -> dict:
    """What Facemap's refinement GUI saves: normalized, cropped, padded images and their keypoints."""
    rng = np.random.default_rng(0)
    images = rng.normal(0.5, 0.2, (n, side, side))
    keypoints = np.concatenate(
        [rng.uniform(5, side - 5, (n, len(BODYPARTS), 2)), rng.uniform(0.5, 1, (n, len(BODYPARTS), 1))], axis=2
    )
    keypoints[0, 11, :2] = np.nan  # the paw out of view
    return {
        "imgs": [images],
        "keypoints": [keypoints],
        "bbox": [[10, 10 + side, 20, 20 + side]],
        "bodyparts": list(BODYPARTS),
        "frame_ind": np.arange(n),
        "video_path": "/data/mouse.mp4",
    }


def test_refined_data_loads_and_trains(tmp_path):
    data = refined_dict()
    shuffled = list(reversed(BODYPARTS))
    data["bodyparts"] = shuffled
    data["keypoints"] = [data["keypoints"][0][:, [BODYPARTS.index(b) for b in shuffled]]]
    path = tmp_path / "mouse_Facemap_refined_data.npy"
    np.save(path, data, allow_pickle=True)

    frames = load_refined_data(path)
    expected = refined_dict()["keypoints"][0]
    assert len(frames) == 3
    assert frames.keypoints[0, 11, 2] == 0 and frames.keypoints[:, :11, 2].all()
    np.testing.assert_allclose(frames.keypoints[1, :, :2], expected[1, :, :2], atol=1e-4)

    image, cells, visible = make_sample(frames.frame(1), frames.keypoints[1], np.random.default_rng(0), 0.0)
    err = np.abs(decoded(cells, make_geometry((100, 100))) - expected[1, :, :2]).max()
    assert visible.all() and err < 0.1, err

    batch = TrainingSet([frames], batch_size=2, seed=0, strength=1.0).batch(0)
    assert batch.images.shape == (2, 1, 256, 256) and batch.visible.shape == (2, len(BODYPARTS))
    run = Trainer.start(TrainConfig(out=str(tmp_path / "tuned"), data=(str(path),), epochs=1, batch=2, init="default"))
    assert run.config.steps == 2 and run.config.lr == 1e-4 and run.config.schedule == "facemap"
    assert run.run().complete


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("keypoints"), "no keypoints"),
        (lambda d: d.update(bodyparts=list(BODYPARTS[:-1]) + ["tail"]), "bodyparts"),
        (lambda d: d.update(keypoints=[d["keypoints"][0][:, :10]]), "keypoints"),
        (lambda d: d.update(imgs=[d["imgs"][0][:2]]), "images but"),
        (lambda d: d.update(bbox=[[5, 1, 0, 4]]), "bbox"),
        (lambda d: d.update(imgs=["not an image"]), "imgs"),
    ],
)
def test_malformed_refined_data_is_one_line_error(tmp_path, change, message):
    data = refined_dict()
    change(data)
    path = tmp_path / "bad_Facemap_refined_data.npy"
    np.save(path, data, allow_pickle=True)
    with pytest.raises(TrainingError, match=message) as info:
        load_refined_data(path)
    assert "\n" not in str(info.value)


def test_crafted_refined_data_cannot_run_code(tmp_path):
    data = refined_dict()
    data["video_path"] = Payload(tmp_path / "marker")
    path = tmp_path / "crafted_Facemap_refined_data.npy"
    np.save(path, data, allow_pickle=True)
    with pytest.raises(TrainingError, match="refused: it asks to run io.open") as info:
        load_refined_data(path)
    assert "\n" not in str(info.value) and not (tmp_path / "marker").exists()
    np.load(path, allow_pickle=True)  # as numpy would load it: the code runs
    assert (tmp_path / "marker").exists()


def test_refined_data_that_is_not_a_dict_fails_through_the_cli(tmp_path, keep_signals):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros((3, 3)))
    result = CliRunner().invoke(main, ["train-tracker", "--data", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error:") and "refined data" in lines[0], result.stderr


# ---------------------------------------------------------------- evaluation


def test_metrics_match_a_hand_computation():
    truth = np.zeros((2, len(BODYPARTS), 3))
    truth[..., 2] = 1
    truth[1, 11, 2] = 0  # the paw out of view in frame 1
    predicted = np.zeros_like(truth)
    predicted[..., 2] = 0.9
    predicted[0, 0, :2] = (3, 4)  # 5 px: counts as within 5 px
    predicted[1, 0, :2] = (6, 8)  # 10 px
    predicted[0, 11, :2] = (0, 2)  # 2 px
    predicted[1, 11, :2] = (100, 100)  # out of view: no error counted
    predicted[1, 11, 2] = 0.5
    m = keypoint_metrics(predicted, truth)
    n_visible = 2 * len(BODYPARTS) - 1
    assert m["keypoints_visible"] == n_visible and m["keypoints_occluded"] == 1
    assert m["mean_px_error"] == pytest.approx((5 + 10 + 2) / n_visible)
    assert m["median_px_error"] == 0
    assert m["within_5px"] == pytest.approx((n_visible - 1) / n_visible)
    assert m["per_keypoint"]["eye(back)"] == {"mean_px_error": 7.5, "within_5px": 0.5, "visible": 2}
    assert m["per_keypoint"]["paw"] == {"mean_px_error": 2.0, "within_5px": 1.0, "visible": 1}
    assert m["likelihood_visible"] == pytest.approx(0.9) and m["likelihood_occluded"] == pytest.approx(0.5)
    none_hidden = keypoint_metrics(predicted[:1], truth[:1])
    assert none_hidden["likelihood_occluded"] is None


def test_eval_command_reports_the_documented_keys():
    result = CliRunner().invoke(main, ["eval", "--frames", "3", "--engine", "torch", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    for key in ("mean_px_error", "within_5px", "per_keypoint", "likelihood_visible", "likelihood_occluded"):
        assert key in report
    assert report["frames"] == 3 and set(report["per_keypoint"]) == set(BODYPARTS)
    assert report["eval_seeds"] == [EVAL_SEED_START, EVAL_SEED_START + 2]
    assert report["mean_px_error"] > 0 and report["frames_from"] == "profiles"


def test_eval_views_tracks_3d_views_of_held_out_heads():
    result = CliRunner().invoke(main, ["eval", "--views", "--frames", "2", "--engine", "torch", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames_from"] == "3D views" and report["frames"] == 2 and report["mean_px_error"] > 0
    both = CliRunner().invoke(main, ["eval", "--views", "--labels", "somewhere"])
    assert both.exit_code != 0 and "give one" in both.output and "Traceback" not in both.output


# ---------------------------------------------------------------- the other commands


def test_models_lists_the_bundled_default_and_facemaps_folder(isolated_home):
    facemap = isolated_home / ".facemap" / "models"
    facemap.mkdir(parents=True, exist_ok=True)
    (facemap / "broken.pt").write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    default = [e for e in entries if e["default"]]
    assert len(default) == 1 and Path(default[0]["state"]).is_file() and Path(default[0]["params"]).is_file()
    assert default[0]["state"] == str(load_model(None).state_path)
    broken = [e for e in entries if e["state"].endswith("broken.pt")]
    assert len(broken) == 1 and "error" in broken[0] and not broken[0]["default"]


def test_train_tracker_command_trains_and_resumes(tmp_path, keep_signals):
    out = tmp_path / "cli"
    args = ["train-tracker", "--out", str(out), "--from", "scratch", "--steps", "2", "--batch", "2",
            "--synthetic-seeds", "2", "--frames-per-seed", "2", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert load_model(out).trained
    marker = torch.load(out / PARAMS_NAME, weights_only=True)["facestream"]
    assert marker["steps"] == 2 and marker["command"].startswith("facestream")
    again = CliRunner().invoke(main, ["train-tracker", "--resume", "--out", str(out), "--lr", "1e-3"])
    assert again.exit_code == 2 and "--lr" in again.stderr
    done = CliRunner().invoke(main, ["train-tracker", "--resume", "--out", str(out), "--quiet"])
    assert done.exit_code == 0 and "step 2 of 2" in done.stderr
