"""`facestream predict-neural`: an encoder applied to a keypoints file gives what the live
pipeline published for the same frames."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.engines.encoder import load_encoder, save_encoder
from facestream.engines.encoder_network import KeypointsEncoder
from facestream.streamer.cli import main
from facestream.streamer.tools.simulate import POSE_NAME, VIDEO_NAME, write_session
from helpers import free_port

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
FRAMES = 60


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """A simulated 50 frames/s video run through the live pipeline frame by frame and recorded;
    the session folder and the recording."""
    folder = tmp_path_factory.mktemp("session")
    write_session(folder, FRAMES, seed=3, fps=50.0, width=320, height=240, neurons=0, progress=False)
    recording = folder / "run.h5"
    proc = subprocess.run(
        [*CLI, "run", "--camera", f"video:{folder / VIDEO_NAME}", "--policy", "every", "--publish",
         f"tcp://127.0.0.1:{free_port()}", "--record", str(recording), "--quiet", "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["recorded"] == FRAMES
    return folder, recording


def _invoke(*args: str):
    return CliRunner().invoke(main, ["predict-neural", "--quiet", *args])


def test_predictions_equal_what_the_live_pipeline_published(recorded, tmp_path):
    _, recording = recorded
    out = tmp_path / "pred.npy"
    result = _invoke("default", str(recording), "--out", str(out))
    assert result.exit_code == 0, result.output
    predicted = np.load(out)
    with h5py.File(recording) as f:
        published = f["facestream/neural"][()]
    assert predicted.dtype == np.float32 and predicted.shape == published.shape == (FRAMES, load_encoder().n_out)
    assert np.abs(published).max() > 0
    np.testing.assert_allclose(predicted, published, rtol=0, atol=1e-5 * np.abs(published).max())


def test_neurons_are_the_components_through_the_projection(recorded, tmp_path):
    _, recording = recorded
    pcs, neurons = tmp_path / "pcs.npy", tmp_path / "neurons.npy"
    assert _invoke("default", str(recording), "--out", str(pcs)).exit_code == 0
    result = _invoke("default", str(recording), "--out", str(neurons), "--neurons")
    assert result.exit_code == 0, result.output
    encoder = load_encoder()
    expected = encoder.projection.to_neurons(np.load(pcs))
    assert np.load(neurons).shape == (FRAMES, encoder.projection.n_neurons)
    np.testing.assert_allclose(np.load(neurons), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_and_bad_files_are_one_line(recorded, tmp_path):
    folder, recording = recorded
    slow = tmp_path / "slow"
    write_session(slow, 20, fps=25.0, width=160, height=120, neurons=0, video=False, progress=False)
    no_projection = tmp_path / "no_projection.npz"
    save_encoder(KeypointsEncoder(n_out=4), no_projection, name="x", kind="pcs", inputs=load_encoder().inputs,
                 trained=False, frame_rate_hz=50.0, n_neurons=100)
    out = str(tmp_path / "p.npy")
    cases = [
        (["default", str(slow / POSE_NAME), "--out", out], "is at 25 frames/s and encoder"),
        (["default", str(folder / VIDEO_NAME), "--out", out], "cannot be read as HDF5"),
        (["default", str(tmp_path / "none.h5"), "--out", out], "cannot be read as HDF5"),
        ([str(tmp_path / "none.npz"), str(recording), "--out", out], "cannot be read"),
        ([str(recording), str(recording), "--out", out], "is not an .npz archive"),
        ([str(no_projection), str(recording), "--out", out, "--neurons"], "holds no projection to neurons"),
        (["default", str(recording), "--out", str(tmp_path / "nowhere" / "p.npy")], "does not exist"),
        (["default", str(recording), "--out", str(tmp_path)], "is a folder"),
    ]
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code != 0, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.output)
    assert not Path(out).exists()
