import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import N_KEYPOINTS
from facestream.engines.encoder import (
    EncoderFileError,
    InputSpec,
    MODELS,
    StreamingEncoder,
    clean_and_normalise,
    load_encoder,
    save_encoder,
)
from facestream.engines.encoder_network import KeypointsEncoder
from facestream.engines.training.synthetic_neurons import NeuralPopulation

MIN_DEFAULT_VE = 0.08  # the default gives 0.16 on frames 16,000-21,999 (docs/encoder.md)
SPEC = InputSpec(np.tile([320.0, 240.0], N_KEYPOINTS), np.full(2 * N_KEYPOINTS, 100.0), 0.52, 25.0)

FACEMAP_STATE_SHAPES = {
    "core.features.linear0.0.weight": (30, 30),
    "core.features.linear0.0.bias": (30,),
    "core.features.wavelet0.weight": (10, 1, 201),
    "core.features.linear1.0.weight": (50, 300),
    "core.features.linear1.0.bias": (50,),
    "core.features.latent.0.weight": (256, 50),
    "core.features.latent.0.bias": (256,),
    "readout.features.linear0.weight": (128, 256),
    "readout.features.linear0.bias": (128,),
}


def walk(n_frames: int, seed: int = 0) -> np.ndarray:
    """(T, 15, 3) keypoints drifting a few pixels per frame, all confident."""
    rng = np.random.default_rng(seed)
    seq = np.empty((n_frames, N_KEYPOINTS, 3))
    seq[:, :, :2] = [320.0, 240.0] + np.cumsum(rng.normal(0, 3, (n_frames, N_KEYPOINTS, 2)), axis=0)
    seq[:, :, 2] = 0.54
    return seq


def random_module(lookahead: int, seed: int) -> KeypointsEncoder:
    """Random filter taps instead of Gabors, whose tails near the window's edges are ~1e-3 of their peak."""
    torch.manual_seed(seed)
    module = KeypointsEncoder(lookahead_frames=lookahead).eval()
    module.core.features.wavelet0.weight.data.normal_(0, 0.1)
    return module


def make_encoder(tmp_path: Path, lookahead: int = 0, seed: int = 0) -> tuple[KeypointsEncoder, StreamingEncoder]:
    module = random_module(lookahead, seed)
    path = tmp_path / f"enc_L{lookahead}_s{seed}.npz"
    save_encoder(module, path, name="test", kind="pcs", inputs=SPEC, trained=False)
    return module, load_encoder(path)


def stream(encoder: StreamingEncoder, seq: np.ndarray) -> np.ndarray:
    encoder.reset()
    return np.stack([encoder.step(frame) for frame in seq])


def forward(module: KeypointsEncoder, x: np.ndarray | torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(torch.as_tensor(x)).numpy()


def test_symmetric_configuration_has_facemaps_parameters():
    module = KeypointsEncoder(n_in=30, n_out=128, kernel_frames=201, lookahead_frames=100)
    assert sum(p.numel() for p in module.parameters()) == 63_942
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == FACEMAP_STATE_SHAPES


def test_wavelets_start_as_facemaps_gabor_pairs_centred_on_the_current_frame():
    w = KeypointsEncoder(lookahead_frames=100).core.features.wavelet0.weight[:, 0].detach().numpy()
    assert w.shape == (10, 201)  # Facemap's own: symmetric about the middle tap, the current frame
    np.testing.assert_allclose(w[:5], w[:5, ::-1], atol=1e-6)
    np.testing.assert_allclose(w[5:], -w[5:, ::-1], atol=1e-6)
    np.testing.assert_allclose([(w[:5] ** 2).sum(), (w[5:] ** 2).sum()], 1.0, rtol=1e-5)
    assert np.argmax(np.abs(w[0])) == 100
    causal = KeypointsEncoder().core.features.wavelet0.weight[:, 0].detach().numpy()
    assert np.argmax(np.abs(causal[0])) == 200, "the causal filter peaks on the current frame, its last tap"
    # its newest 101 taps are the past half of Facemap's filters
    newest, past = causal[:, 100:], w[:, :101]
    np.testing.assert_allclose(newest / np.linalg.norm(newest, axis=1, keepdims=True),
                               past / np.linalg.norm(past, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose([(causal[:5] ** 2).sum(), (causal[5:] ** 2).sum()], 1.0, rtol=1e-5)


@pytest.mark.parametrize("lookahead", [0, 3])
def test_forward_is_causal(lookahead):
    module = random_module(lookahead, seed=1)
    x = torch.randn(400, 30)
    t = 250
    x2 = x.clone()
    x2[t + 1 :] += torch.randn(399 - t, 30)
    y, y2 = forward(module, x), forward(module, x2)
    last_unaffected = t - lookahead
    np.testing.assert_allclose(y2[: last_unaffected + 1], y[: last_unaffected + 1], rtol=0, atol=1e-6)
    assert np.abs(y2[last_unaffected + 1] - y[last_unaffected + 1]).max() > 1e-4
    assert np.abs(y2[last_unaffected + 1 :] - y[last_unaffected + 1 :]).max(axis=1).min() > 1e-4


def test_forward_batched_equals_unbatched():
    module = random_module(lookahead=5, seed=2)
    x = torch.randn(3, 120, 30)
    batched = forward(module, x)
    assert batched.shape == (3, 120, 128)
    for b in range(3):
        np.testing.assert_allclose(batched[b], forward(module, x[b]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lookahead", [0, 3])
def test_streaming_is_causal(tmp_path, lookahead):
    _, encoder = make_encoder(tmp_path, lookahead)
    seq = walk(400)
    t = 250
    seq2 = seq.copy()
    seq2[t + 1 :, :, :2] += 10.0
    out, out2 = stream(encoder, seq), stream(encoder, seq2)
    np.testing.assert_array_equal(out2[: t + 1], out[: t + 1])
    assert np.abs(out2[t + 1 :] - out[t + 1 :]).max(axis=1).min() > 1e-4


@pytest.mark.parametrize("lookahead", [0, 3])
def test_streaming_equals_whole_sequence(tmp_path, lookahead):
    module, encoder = make_encoder(tmp_path, lookahead)
    seq = walk(600, seed=lookahead)
    seq[100, 4, 0] = np.nan
    seq[300:310, 11, 2] = 0.5
    seq[400, 2, :2] += 80.0
    streamed = stream(encoder, seq)
    whole = forward(module, clean_and_normalise(seq, SPEC))
    assert streamed.dtype == np.float32 and streamed.shape == (600, 128)
    # step t's output is the prediction for frame t - lookahead
    diff = np.abs(streamed[lookahead:] - whole[: 600 - lookahead]).max()
    assert diff <= 1e-5 * np.abs(whole).max()
    assert np.abs(whole).max() > 1e-3


def state_nbytes(obj, seen=None) -> int:
    """Bytes held in numpy arrays and Python containers reachable from obj's attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return 8 * len(obj) + sum(state_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return 8 * len(obj) + sum(state_nbytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, (type, Path)):
        return state_nbytes(vars(obj), seen)
    return 0


def test_state_size_is_fixed(tmp_path):
    _, encoder = make_encoder(tmp_path)
    seq = walk(5000)
    encoder.reset()
    for frame in seq[:10]:
        encoder.step(frame)
    after_10 = state_nbytes(encoder)
    for frame in seq[10:]:
        encoder.step(frame)
    assert state_nbytes(encoder) == after_10
    assert after_10 > 201 * 30 * 4


def test_nan_low_likelihood_and_jumps_are_held(tmp_path):
    _, encoder = make_encoder(tmp_path)
    seq = walk(300)
    bad, held = seq.copy(), seq.copy()
    for frame, keypoint in [(100, 3), (150, 5), (200, 7), (220, 9)]:
        held[frame, keypoint, :2] = seq[frame - 1, keypoint, :2]
    bad[100, 3, 0] = np.nan
    bad[150, 5, :2] += [100.0, 0.0]
    bad[200, 7, :2] += 40.0
    bad[200, 7, 2] = 0.5
    bad[220, 9, 2] = np.nan
    out_bad, out_held = stream(encoder, bad), stream(encoder, held)
    assert np.isfinite(out_bad).all()
    np.testing.assert_array_equal(out_bad, out_held)
    assert not np.array_equal(stream(encoder, seq), out_held)
    np.testing.assert_array_equal(clean_and_normalise(bad, SPEC), clean_and_normalise(held, SPEC))


def test_mean_is_used_before_any_keypoint_is_accepted():
    seq = walk(10)
    seq[:4, :, :2] = np.nan
    seq[4:6, :, 2] = 0.3
    x = clean_and_normalise(seq, SPEC)
    np.testing.assert_array_equal(x[:6], 0.0)
    np.testing.assert_allclose(x[6], (seq[6, :, :2].reshape(-1) - SPEC.mean) / SPEC.std, rtol=1e-6)


def test_a_lasting_move_is_accepted_on_its_second_frame():
    seq = walk(20)
    seq[10:, 2, 0] += 60.0
    x = clean_and_normalise(seq, SPEC) * SPEC.std + SPEC.mean
    assert x[10, 4] == pytest.approx(seq[9, 2, 0], abs=1e-3)
    assert x[11, 4] == pytest.approx(seq[11, 2, 0], abs=1e-3)


def test_file_round_trip(tmp_path):
    module, first = make_encoder(tmp_path, lookahead=2, seed=5)
    x = torch.randn(300, 30)
    np.testing.assert_array_equal(forward(first.to_module(), x), forward(module, x))
    second_path = tmp_path / "again.npz"
    save_encoder(first.to_module(), second_path, name="test", kind="pcs", inputs=SPEC, trained=False)
    second = load_encoder(second_path)
    seq = walk(300)
    np.testing.assert_array_equal(stream(second, seq), stream(first, seq))
    d = second.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["sha256"] == hashlib.sha256(second_path.read_bytes()).hexdigest()
    assert (d["kernel_frames"], d["lookahead_frames"], d["n_out"], d["kind"]) == (201, 2, 128, "pcs")


def _write_default_arrays(path: Path, **replace) -> None:
    """A network's encoder file with the default's projection, arrays replaced (None: left out)."""
    source = path.with_name(f"source-{path.name}")
    save_encoder(random_module(0, 0), source, name="test", kind="pcs", inputs=SPEC, trained=False,
                 projection=load_encoder().projection)
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


class _Touch:
    """Unpickling this creates a file: proof that pickled data would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "case",
    ["missing", "text", "npy", "no_meta", "bad_json", "missing_array", "wrong_shape", "nan_weights", "pickle",
     "partial_projection", "projection_rows"],
)
def test_bad_files_raise_encoder_file_error(tmp_path, case):
    path = tmp_path / f"{case}.npz"
    meta = json.loads(str(np.load(load_encoder().path, allow_pickle=False)["meta"]))
    marker = tmp_path / "unpickled"
    if case == "text":
        path.write_text("not a model\n")
    elif case == "npy":
        np.save(path, np.zeros(3))
        path = path.with_suffix(".npz.npy")
    elif case == "no_meta":
        _write_default_arrays(path, meta=None)
    elif case == "bad_json":
        _write_default_arrays(path, meta=np.array("{not json"))
    elif case == "missing_array":
        _write_default_arrays(path, **{"core.features.latent.0.bias": None})
    elif case == "wrong_shape":
        _write_default_arrays(path, **{"core.features.wavelet0.weight": np.zeros((10, 1, 200), np.float32)})
    elif case == "nan_weights":
        _write_default_arrays(path, **{"core.features.linear0.0.bias": np.full(30, np.nan, np.float32)})
    elif case == "partial_projection":
        _write_default_arrays(path, **{"projection.scale": None})
    elif case == "projection_rows":
        _write_default_arrays(path, **{"projection.components": np.zeros((999, 128), np.float32)})
    elif case == "pickle":
        evil = np.empty(1, dtype=object)
        evil[0] = _Touch(marker)
        _write_default_arrays(path, meta=np.array(json.dumps(meta)), extra=evil)
    with pytest.raises(EncoderFileError) as info:
        load_encoder(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists()
    if case == "pickle":
        assert "object array" in message


def test_default_model():
    encoder = load_encoder()
    d = encoder.describe()
    assert json.loads(json.dumps(d)) == d
    assert (d["lookahead_frames"], d["n_out"], d["kind"]) == (0, 128, "pcs") and d["model"] in MODELS
    assert d["kernel_frames"] == encoder.kernel_frames >= 8
    assert d["trained"] and d["projection"] and d["n_neurons"] == 1000 and d["frame_rate_hz"] == 50.0
    assert d["test_variance_explained"] > 0
    assert d["inputs"]["jump_threshold_px"] >= 5.0
    assert 0.5 < d["inputs"]["likelihood_threshold"] < 0.544
    assert (encoder.inputs.std >= 1.0).all()
    assert encoder.path.stat().st_size < 1_000_000
    y = encoder.step(walk(1)[0])
    assert y.shape == (128,) and y.dtype == np.float32 and np.isfinite(y).all()


def test_output_meta_says_what_neural_holds(tmp_path):
    _, untrained = make_encoder(tmp_path, lookahead=5)
    meta = untrained.output_meta(100.0)
    assert (meta["kind"], meta["length"], meta["lookahead_frames"], meta["lookahead_ms"]) == ("pcs", 128, 5, 50.0)
    assert not meta["trained"] and "no meaning" in meta["values"]
    default = load_encoder().output_meta(None)  # an unpaced camera: the rate it was trained at
    assert (default["lookahead_ms"], default["trained"], default["n_neurons"]) == (0.0, True, 1000)
    assert "principal components" in default["values"] and "1000 neurons" in default["values"]
    assert json.loads(json.dumps(default)) == default


def synthetic_face(start: int, frames: int, seed: int = 0) -> tuple[SyntheticCamera, np.ndarray]:
    """The synthetic camera and the true keypoints of its frames start .. start + frames - 1."""
    camera = SyntheticCamera(640, 480, fps=50.0, seed=seed)
    return camera, np.stack([camera.model.pose(camera.time_of(k)).keypoints for k in range(start, start + frames)])


def test_default_streams_causally_and_as_the_whole_sequence():
    encoder = load_encoder()
    _, seq = synthetic_face(0, 500)
    seq = seq.astype(np.float64)
    seq[120, 4, 0] = np.nan
    seq[200:205, 8, 2] = 0.0
    seq[300, 2, :2] += 90.0
    streamed = stream(encoder, seq)
    whole = encoder.offline_model().predict(clean_and_normalise(seq, encoder.inputs))
    assert np.isfinite(streamed).all()
    assert np.abs(streamed - whole).max() <= 1e-4 * np.abs(whole).max()
    changed = seq.copy()
    changed[401:, :, :2] += 15.0
    out = stream(encoder, changed)
    np.testing.assert_array_equal(out[:401], streamed[:401])
    assert np.abs(out[401:] - streamed[401:]).max() > 1e-3


def test_default_predicts_held_out_synthetic_activity():
    """Two minutes after the 15,000 frames it was trained on, scored as train-encoder scores: on
    the population's recorded samples (spike counts at 30 Hz), each predicted by the stream's
    output at the last frame before it. The default was trained on the bundled tracker's
    keypoints, which sit a few pixels from the true ones the simulator gives here, by an
    amount fixed per keypoint (up to 9 px on the eye); that shifts each output by a constant,
    so each side's mean over the two minutes is taken out before scoring."""
    encoder = load_encoder()
    start, frames, warm_up = 16_000, 6000, 201
    camera, keypoints = synthetic_face(start, frames)
    frame_t = np.array([camera.time_of(k) for k in range(start, start + frames)])
    sample_t = np.arange(frame_t[warm_up], frame_t[-1], 1 / 30)
    population = NeuralPopulation.create(1000, seed=0)
    counts = population.sample(camera.model.latents, sample_t, np.random.default_rng(7))
    target = encoder.projection.to_pcs(counts.T)
    target -= target.mean(axis=0)
    predicted = stream(encoder, keypoints)[np.searchsorted(frame_t, sample_t, side="right") - 1]
    predicted -= predicted.mean(axis=0)
    explained = 1 - ((target - predicted) ** 2).mean() / (target**2).mean()
    shuffled = 1 - ((target - predicted[::-1]) ** 2).mean() / (target**2).mean()
    assert explained > MIN_DEFAULT_VE and explained > shuffled + MIN_DEFAULT_VE, (explained, shuffled)
