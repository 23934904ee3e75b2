"""The causal ridge model and its sum with a network: features, fit, and files streamed live as they run offline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facestream.engines.encoder import (
    EncoderFileError,
    NeuralProjection,
    clean_and_normalise,
    load_encoder,
    save_encoder,
)
from facestream.engines.encoder_network import KeypointsEncoder, RidgePlusNetwork
from facestream.engines.training.encoder_training import model_to_neurons
from facestream.engines.lagged_ridge import LaggedFeatureWindow, LaggedRidge, lagged_features
from facestream.engines.training.ridge_fit import fit_ridge
from test_encoder import SPEC, state_nbytes, stream, walk

EDGES = (0, 1, 2, 4, 8, 16)


def test_features_are_bin_means_of_positions_and_speeds_of_past_frames():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    features = lagged_features(x, EDGES).reshape(40, len(EDGES) - 1, 6)
    speeds = np.abs(np.diff(x, axis=0, prepend=x[:1]))
    padded = np.vstack([np.zeros((16, 6)), np.hstack([x, speeds])])  # zeros before the first frame
    for t in (0, 5, 20, 39):
        for k, (a, b) in enumerate(zip(EDGES, EDGES[1:])):
            expected = padded[16 + t - b + 1:16 + t - a + 1].mean(axis=0)
            np.testing.assert_allclose(features[t, k], expected, rtol=1e-5, atol=1e-6)
    changed = x.copy()
    changed[30:] += 5.0
    np.testing.assert_array_equal(lagged_features(changed, EDGES)[:30], lagged_features(x, EDGES)[:30])


def test_the_window_gives_the_offline_features_one_frame_at_a_time():
    x = np.random.default_rng(1).normal(size=(100, 30)).astype(np.float32)
    window = LaggedFeatureWindow(30, EDGES)
    for _ in range(2):  # and again after a reset
        window.reset()
        online = np.stack([window(row) for row in x])
        np.testing.assert_allclose(online, lagged_features(x, EDGES), rtol=1e-5, atol=1e-5)


def _ridge_file(tmp_path, n_out: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = LaggedRidge(rng.normal(0, 0.1, (n_out, (len(EDGES) - 1) * 60)), rng.normal(size=n_out), EDGES, 30)
    path = tmp_path / "ridge.npz"
    save_encoder(model, path, name="ridge", kind="pcs", inputs=SPEC, trained=False)
    return model, path


def test_ridge_file_streams_exactly_as_the_offline_model(tmp_path):
    model, path = _ridge_file(tmp_path)
    encoder = load_encoder(path)
    assert (encoder.model, encoder.kernel_frames, encoder.lookahead_frames, encoder.n_out) == ("ridge", 16, 0, 7)
    seq = walk(600)
    seq[100, 3, 0] = np.nan
    seq[150:160, 5, 2] = 0.1
    seq[200, 7, :2] += 300.0
    streamed = stream(encoder, seq)
    offline = encoder.offline_model().predict(clean_and_normalise(seq, encoder.inputs))
    assert np.isfinite(streamed).all()
    assert np.abs(streamed - offline).max() <= 1e-4 * np.abs(offline).max()
    np.testing.assert_allclose(offline, model.predict(clean_and_normalise(seq, SPEC)), rtol=1e-5, atol=1e-5)
    d = encoder.describe()
    assert json.loads(json.dumps(d)) == d and d["model"] == "ridge"
    with pytest.raises(ValueError, match="not a network"):
        encoder.to_module()


def test_ridge_state_is_fixed_in_size(tmp_path):
    _, path = _ridge_file(tmp_path)
    encoder = load_encoder(path)
    seq = walk(2000)
    encoder.reset()
    for frame in seq[:20]:
        encoder.step(frame)
    size = state_nbytes(encoder)
    for frame in seq[20:]:
        encoder.step(frame)
    assert state_nbytes(encoder) == size


@pytest.mark.parametrize("case", ["edges", "shape", "lookahead"])
def test_bad_ridge_files_raise_encoder_file_error(tmp_path, case):
    _, path = _ridge_file(tmp_path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["meta"]))
    if case == "edges":
        meta["bin_edges"] = [0, 4, 2]
    elif case == "shape":
        arrays["ridge.weight"] = arrays["ridge.weight"][:, :-1]
    else:
        meta["lookahead_frames"] = 3
    arrays["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(EncoderFileError) as info:
        load_encoder(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_fit_finds_the_window_a_lagged_target_needs():
    """A target that depends on the inputs 24-31 frames back: an 8- or 16-frame window cannot
    see it, a 32-frame one can; the fit must say so on validation frames it did not train on."""
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(6002, 30))
    x = ((noise[2:] + noise[1:-1] + noise[:-2]) / 3).astype(np.float32)  # correlated over 3 frames only
    y = np.zeros((6000, 2))
    lagged = np.mean([np.vstack([np.zeros((lag, 30)), x[:-lag]]) for lag in range(24, 32)], axis=0)
    y[:, 0] = lagged[:, 0] - lagged[:, 4]  # the inputs 24 to 31 frames back
    y[:, 1] = np.abs(np.diff(x[:, 7], prepend=x[0, 7]))  # a speed, now
    y += rng.normal(0, 0.05, y.shape)
    train, validation = np.arange(0, 4500), np.arange(4600, 6000)
    score = lambda p: 1 - ((y[validation] - p[validation]) ** 2).mean() / y[validation].var(axis=0).mean()  # noqa: E731
    choice = fit_ridge(x, y, train, score)
    assert choice.window_frames >= 32
    assert choice.validation_score > 0.8
    assert max(v for k, v in choice.scores.items() if k.startswith("16/")) < choice.validation_score - 0.2


def test_ridge_plus_network_file_streams_exactly_as_the_sum_offline(tmp_path):
    """The sum of the ridge model and a network: one file, one streaming step, the same numbers
    as both run on the whole sequence and added; and with the projection folded in, neurons."""
    torch.manual_seed(3)
    ridge, _ = _ridge_file(tmp_path, n_out=6)
    network = KeypointsEncoder(n_out=6, kernel_frames=41).eval()
    hybrid = RidgePlusNetwork(ridge, network)
    path = tmp_path / "hybrid.npz"
    save_encoder(hybrid, path, name="hybrid", kind="pcs", inputs=SPEC, trained=False)
    encoder = load_encoder(path)
    assert (encoder.model, encoder.kernel_frames, encoder.lookahead_frames) == ("ridge+network", 41, 0)
    seq = walk(500)
    seq[120, 2, :2] += 250.0
    inputs = clean_and_normalise(seq, SPEC)
    offline = encoder.offline_model().predict(inputs)
    with torch.no_grad():
        parts = ridge.predict(inputs) + network(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(offline, parts, rtol=1e-5, atol=1e-5)
    streamed = stream(encoder, seq)
    assert np.abs(streamed - offline).max() <= 1e-4 * np.abs(offline).max()

    rng = np.random.default_rng(4)
    projection = NeuralProjection(rng.normal(size=20), rng.uniform(0.5, 2, 20), np.linalg.qr(rng.normal(size=(20, 6)))[0])
    neurons = model_to_neurons(hybrid, projection).predict(inputs)
    np.testing.assert_allclose(neurons, projection.to_neurons(hybrid.predict(inputs)), rtol=1e-4, atol=1e-4)


def test_ridge_plus_network_refuses_a_look_ahead_or_a_longer_ridge_window(tmp_path):
    ridge, _ = _ridge_file(tmp_path, n_out=6)
    with pytest.raises(ValueError, match="causal"):
        RidgePlusNetwork(ridge, KeypointsEncoder(n_out=6, kernel_frames=41, lookahead_frames=2))
    with pytest.raises(ValueError, match="window"):
        RidgePlusNetwork(ridge, KeypointsEncoder(n_out=6, kernel_frames=9))
