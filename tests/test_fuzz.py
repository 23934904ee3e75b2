"""Fuzzing the parsers with hypothesis: whatever they are given, they give their result or
their own one-line error, never another exception.

- config files (``load_config``): the settings or a ``ConfigError``;
- protocol payloads as the Python client decodes them (``protocol.unpack``, ``Subscriber``'s
  frame decoding, ``Message.result`` and ``Message.line``): a message or a ``ProtocolError``;
- recordings as ``facestream report`` (``read_recording``) and ``train-encoder``
  (``read_keypoints``) read them: small HDF5 files of random groups, datasets, shapes and
  dtypes: a result or ``ReportError`` / ``EncoderTrainingError``;
- Facemap's refined-data files (``load_refined_data``, ``labelled_frames.load``): random npy
  content gives ``TrainingError`` / ``LabelsError``.

Budgets are bounded and the runs derandomized, so CI sees the same examples every time
(``FACESTREAM_FUZZ_SCALE=20`` multiplies the budgets for a longer hunt).
"""
import atexit
import json
import math
import os
import shutil
import string
import tempfile
from pathlib import Path

import h5py
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.training.datasets import TrainingError, load_refined_data
from facestream.engines.training.encoder_training import EncoderTrainingError, read_keypoints
from facestream.engines.training.labelled_frames import LabelsError, load_labelled
from facestream.streamer import protocol
from facestream.streamer.client import Message, Subscriber
from facestream.streamer.config import _SECTIONS, ConfigError, load_config
from facestream.streamer.tools.report import ReportError, read_recording

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

_DIR = Path(tempfile.mkdtemp(prefix="facestream-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def _budget(examples: int) -> int:
    """Examples per test: CI's bounded budget, times FACESTREAM_FUZZ_SCALE for a longer hunt."""
    return examples * max(1, int(os.environ.get("FACESTREAM_FUZZ_SCALE", "1")))


def _one_line(exc: Exception) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


def _file(name: str) -> Path:
    return _DIR / f"{os.getpid()}-{name}"


# -- config files ----------------------------------------------------------------------------

_KEYS = {section: [f.name for f in __import__("dataclasses").fields(cls)] for section, cls in _SECTIONS.items()}
_bare = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


def _toml_string(s: str) -> str:
    return json.dumps(s)  # a JSON string is a TOML basic string, escapes included


_scalar = st.one_of(
    st.integers(min_value=-2**63, max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf") if math.isinf(f) else repr(f)),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(_toml_string),
    st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", "0x1f", "0o17", "0b101", "1_000",
                     "'literal'", '"tcp://127.0.0.1:5555"', '"synthetic"', '"cam0"', '"0.0.0.0"',
                     '"tcp://*:0"', '"ipc:///tmp/x"', '"video:/nope.avi"', '"latest"', '"onnx"', '"json"']),
)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=5).map(lambda v: "[" + ", ".join(v) + "]"),
    st.dictionaries(_bare, inner, max_size=3).map(
        lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")), max_leaves=8)


@st.composite
def _toml_text(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.one_of(st.sampled_from(sorted(_KEYS)), _bare))
        lines.append(draw(st.sampled_from([f"[{section}]", f"[[{section}]]", f"[{section}.sub]"])))
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.one_of(st.sampled_from(_KEYS.get(section) or ["x"]), _bare))
            lines.append(f"{key} = {draw(_value)}")
    return "\n".join(lines) + "\n"


def _load_config_file(data: bytes) -> None:
    path = _file("config.toml")
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as e:
        _one_line(e)


@settings(max_examples=_budget(100), **FUZZ)
@given(_toml_text())
def test_fuzz_config_text(text):
    _load_config_file(text.encode())


@settings(max_examples=_budget(60), **FUZZ)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_fuzz_config_bytes(data):
    _load_config_file(data)


# -- protocol payloads as the Python client decodes them -------------------------------------

_plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(), st.text(max_size=8),
              st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10)
_number = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False, width=32))
_triple = st.lists(_number, min_size=0, max_size=4)
_FRAME_FIELDS = {
    "seq": st.one_of(st.integers(0, 2**40), _plain), "frame_id": st.one_of(st.integers(0, 2**40), _plain),
    "t_capture_ns": st.one_of(st.integers(0, 2**62), _plain), "t_publish_ns": st.one_of(st.integers(0, 2**62), _plain),
    "t_camera_ns": st.one_of(st.none(), st.integers(0, 2**62), _plain), "camera": st.one_of(st.text(max_size=6), _plain),
    "keypoints": st.one_of(st.lists(_triple, min_size=0, max_size=16), st.lists(st.lists(_number, min_size=3, max_size=3),
                                                                                min_size=15, max_size=15), _plain),
    "neural": st.one_of(st.lists(_number, max_size=5), _plain), "dropped": st.one_of(st.integers(0, 100), _plain),
    "keypoints_predicted": st.one_of(st.none(), st.lists(_triple, max_size=16), _plain),
    "neural_predicted": st.one_of(st.none(), st.lists(_number, max_size=5), _plain),
    "t_predicted_ns": st.one_of(st.none(), st.integers(0, 2**62), _plain),
}


_VALID_FRAME = {
    "seq": st.integers(0, 2**40), "frame_id": st.integers(0, 2**40), "t_capture_ns": st.integers(0, 2**62),
    "t_publish_ns": st.integers(0, 2**62), "t_camera_ns": st.one_of(st.none(), st.integers(0, 2**62)),
    "camera": st.text(max_size=6), "keypoints": st.lists(st.lists(_number, min_size=3, max_size=3), min_size=15, max_size=15),
    "neural": st.lists(_number, max_size=5), "dropped": st.integers(0, 100),
}


@st.composite
def _message(draw) -> dict:
    """A valid frame message with some of its fields dropped or replaced, and others added."""
    message = {name: draw(strategy) for name, strategy in _VALID_FRAME.items()}
    message["v"] = protocol.VERSION
    for name in draw(st.lists(st.sampled_from(sorted(_FRAME_FIELDS) + ["v"]), unique=True, max_size=3)):
        if draw(st.booleans()):
            message.pop(name, None)
        else:
            message[name] = draw(_FRAME_FIELDS.get(name, _plain))
    extra = draw(st.dictionaries(st.text(max_size=6), _plain, max_size=2))
    return {**extra, **message}


def _encode(obj, encoding: str) -> bytes | None:
    try:
        if encoding == "json":
            return json.dumps(obj, allow_nan=False, default=lambda b: b.hex()).encode()
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None


_topic = st.one_of(st.sampled_from([b"frame/cam0", b"frame", b"meta", b"preview", b"frame/", b"meta/x", b""]),
                   st.binary(max_size=12))
_payload = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.one_of(_message(), _plain), st.sampled_from(["msgpack", "json"])).map(lambda t: _encode(*t) or b""),
    st.binary(max_size=16).map(lambda b: b"{" + b),
)


def _decode_as_the_client(topic: bytes, payload: bytes) -> None:
    sub = Subscriber.__new__(Subscriber)  # the decoding half of a subscriber, without a socket
    sub.meta, sub.lost, sub.skipped, sub.frames, sub._last_seq = None, 0, 0, 0, {}
    try:
        data = sub._decode(topic, payload)
        kind = protocol.topic_kind(topic)
        if kind == protocol.TOPIC_FRAME:
            sub._count(data, passed_over=0)
        message = Message(kind.decode(), data, 0)
        if kind == protocol.TOPIC_FRAME:
            assert message.result is not None
        if kind != protocol.TOPIC_PREVIEW:
            assert isinstance(message.line(), str)
    except protocol.ProtocolError as e:
        _one_line(e)


@settings(max_examples=_budget(400), **FUZZ)
@given(_topic, _payload)
def test_fuzz_protocol_payloads(topic, payload):
    _decode_as_the_client(topic, payload)


@settings(max_examples=_budget(150), **FUZZ)
@given(_message(), st.sampled_from(["msgpack", "json"]))
def test_fuzz_frame_messages(message, encoding):
    payload = _encode(message, encoding)
    if payload is not None:
        _decode_as_the_client(b"frame/cam0", payload)


def _meta_or_preview(draw_from):
    return st.fixed_dictionaries({"v": st.just(protocol.VERSION)}, optional={
        "cameras": _plain, "camera": st.one_of(_plain, st.text(max_size=4)), "status": _plain,
        "jpeg": _plain, "keypoints": st.one_of(_plain, st.lists(_triple, max_size=3)), "frame_id": _plain})


@settings(max_examples=_budget(150), **FUZZ)
@given(st.lists(st.tuples(st.sampled_from([b"meta", b"preview", b"frame/cam0", b"frame/x"]),
                          st.one_of(_message(), _meta_or_preview(None), _plain),
                          st.sampled_from(["msgpack", "json"])), min_size=1, max_size=6))
def test_fuzz_payloads_taken_by_the_monitor(messages):
    """The monitor's subscriber takes whatever comes (a bad message is counted, never raised:
    it would end the thread), and what it then sends a page is JSON."""
    from facestream.streamer.monitor import _Cursor, _Hub, _not_json
    hub = _Hub("tcp://127.0.0.1:5555")
    for topic, message, encoding in messages:
        hub.take(topic, _encode(message, encoding) or b"")
    with hub.cond:
        update = hub.update_for(_Cursor(sample=0))
    json.dumps(update, default=_not_json)


# -- recordings as report and train-encoder read them ----------------------------------------

_DTYPES = ["f8", "f4", "i8", "u1", "i2", "?", "S4", "c8", "O"]
_names = st.one_of(st.sampled_from(list(BODYPARTS) + ["x", "y", "likelihood", "t_capture_ns", "t_video_s",
                                                    "t_ns", "t_publish_ns", "frame_id"]), _bare)


@st.composite
def _dataset(draw):
    dtype = draw(st.sampled_from(_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = int(np.prod(shape)) if shape else 1
    if dtype == "O":
        return np.array([str(i) for i in range(size)], dtype=h5py.string_dtype()).reshape(shape)
    if dtype == "S4":
        return np.array([b"ab" * (i % 2) for i in range(size)], dtype="S4").reshape(shape)
    values = draw(st.lists(st.one_of(st.floats(-1e12, 1e12), st.sampled_from([math.nan, math.inf, -math.inf])) if dtype[0] in "fc"
                           else st.integers(0, 200), min_size=size, max_size=size))
    return np.array(values).astype(dtype).reshape(shape)


_attr = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True),
                  st.text(st.characters(blacklist_characters="\0"), max_size=6),  # HDF5 strings have no NUL st.just("[1, 2]"),
                  st.just('{"a": 1}'), st.lists(st.integers(0, 3), max_size=3).map(np.array))


@st.composite
def _tree(draw, depth: int = 0) -> dict:
    """{name: array (a dataset) | dict (a group)}; '@name' keys are the attributes."""
    tree = {}
    for name in draw(st.lists(_names, max_size=5 if depth else 3, unique=True)):
        if depth < 2 and draw(st.booleans()):
            tree[name] = draw(_tree(depth=depth + 1))
        else:
            tree[name] = draw(_dataset())
    for name in draw(st.lists(st.sampled_from(["fps", "meta", "settings", "x"]), max_size=2, unique=True)):
        tree["@" + name] = draw(_attr)
    return tree


@st.composite
def _recording_tree(draw) -> dict:
    """A recording as facestream writes it (every bodypart's x, y, likelihood, /facestream's
    columns, attributes), then changed in a few places: a part replaced by random datasets or
    groups, dropped, or random ones added."""
    frames = draw(st.integers(0, 4))
    tree = {"Facemap": {bp: {k: np.linspace(0, 1, frames) for k in ("x", "y", "likelihood")} for bp in BODYPARTS},
            "facestream": {"t_capture_ns": np.arange(frames, dtype="i8") * 10**7,
                           "t_publish_ns": np.arange(frames, dtype="i8") * 10**7 + 5, "frame_id": np.arange(frames),
                           "@meta": '{"a": 1}'},
            "@fps": 30.0}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "Facemap", "bodypart", "column", "facestream"]))
        change = draw(st.sampled_from(["drop", "dataset", "tree"]))
        if where == "top":
            holder, name = tree, draw(st.sampled_from(["Facemap", "facestream", "@fps"]))
        elif where == "Facemap" and isinstance(tree.get("Facemap"), dict):
            holder, name = tree["Facemap"], draw(st.one_of(st.sampled_from(BODYPARTS), _bare))
        elif where == "bodypart" and isinstance(tree.get("Facemap"), dict) and tree["Facemap"]:
            bp = draw(st.sampled_from(sorted(tree["Facemap"])))
            if not isinstance(tree["Facemap"][bp], dict):
                continue
            holder, name = tree["Facemap"][bp], draw(st.sampled_from(["x", "y", "likelihood"]))
        elif where in ("column", "facestream") and isinstance(tree.get("facestream"), dict):
            holder = tree["facestream"]
            name = draw(st.one_of(st.sampled_from(["t_capture_ns", "t_publish_ns", "t_video_s", "t_ns", "@meta"]),
                                  _bare))
        else:
            continue
        if change == "drop":
            holder.pop(name, None)
        elif name.startswith("@"):
            holder[name] = draw(_attr)
        else:
            holder[name] = draw(_dataset() if change == "dataset" else _tree(depth=1))
    return tree


def _write(group: h5py.Group, tree: dict) -> None:
    for name, value in tree.items():
        if name.startswith("@"):
            group.attrs[name[1:]] = value
        elif isinstance(value, dict):
            _write(group.create_group(name), value)
        else:
            group.create_dataset(name, data=value)


def _h5(tree: dict) -> Path:
    path = _file("recording.h5")
    with h5py.File(path, "w") as f:
        _write(f, tree)
    return path


@settings(max_examples=_budget(60), **FUZZ)
@given(_recording_tree())
def test_fuzz_recordings_read_by_report(tree):
    path = _h5(tree)
    try:
        rec = read_recording(path)
    except ReportError as e:
        _one_line(e)
        return
    assert rec.keypoints.ndim == 3 and rec.keypoints.shape[2] == 3 and rec.frames > 0
    assert rec.t_s.shape == (rec.frames,)


@settings(max_examples=_budget(60), **FUZZ)
@given(_recording_tree())
def test_fuzz_recordings_read_by_train_encoder(tree):
    path = _h5(tree)
    try:
        keypoints, times, fps = read_keypoints(path)
    except EncoderTrainingError as e:
        _one_line(e)
        return
    assert keypoints.ndim == 3 and keypoints.shape[1:] == (len(BODYPARTS), 3)
    assert times is None or times.shape == (len(keypoints),)
    assert fps is None or isinstance(fps, float)


@settings(max_examples=_budget(20), **FUZZ)
@given(st.binary(max_size=600))
def test_fuzz_recording_bytes(data):
    path = _file("bytes.h5")
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + data if data[:1] == b"\0" else data)
    with pytest.raises(ReportError) as e:
        read_recording(path)
    _one_line(e.value)
    with pytest.raises(EncoderTrainingError) as e:
        read_keypoints(path)
    _one_line(e.value)


# -- Facemap's refined-data files -----------------------------------------------------------

_small_array = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill, np.float32),
              st.lists(st.integers(0, 6), max_size=4).map(tuple), st.floats(width=32)),
    st.builds(lambda shape: np.zeros(shape, np.uint8), st.lists(st.integers(0, 6), max_size=3).map(tuple)),
    st.lists(st.text(max_size=4), max_size=3).map(lambda v: np.array(v, dtype=object)),
)
_content = st.recursive(st.one_of(_small_array, st.none(), st.integers(-3, 40), st.floats(), st.text(max_size=8)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner)),
                        max_leaves=6)


@st.composite
def _refined(draw):
    """A dict near Facemap's (imgs, keypoints, bbox, bodyparts), or anything else."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.one_of(_content, st.dictionaries(st.text(max_size=5), _content, max_size=3)))
    n = draw(st.integers(0, 3))
    side = draw(st.integers(1, 8))
    data = {
        "imgs": draw(st.one_of(st.just([np.random.default_rng(n).random((n, side, side), np.float32)]), _content)),
        "keypoints": draw(st.one_of(
            st.just([np.random.default_rng(n).random((n, len(BODYPARTS), 3), np.float32) * side]),
            st.builds(lambda k: [np.full((n, len(BODYPARTS), 3), k, np.float32)], st.floats(width=32)), _content)),
        "bbox": draw(st.one_of(st.just([[0, side, 0, side]] * 1), _content)),
        "bodyparts": draw(st.one_of(st.just(list(BODYPARTS)), st.just(np.array(BODYPARTS)), _content)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=2, unique=True)):
        del data[key]
    return data


def _save_object(path: Path, data) -> bool:
    try:
        np.save(path, np.array(data, dtype=object) if not isinstance(data, np.ndarray) else data, allow_pickle=True)
    except (ValueError, TypeError):
        return False
    return True


@settings(max_examples=_budget(150), **FUZZ)
@given(_refined())
def test_fuzz_refined_data(data):
    path = _file("session_Facemap_refined_data.npy")
    if not _save_object(path, data):
        return
    try:
        frames = load_refined_data(path)
    except TrainingError as e:
        _one_line(e)
    else:
        assert len(frames) == len(frames.images) > 0
    try:
        load_labelled(path)
    except LabelsError as e:
        _one_line(e)


@settings(max_examples=_budget(30), **FUZZ)
@given(st.binary(max_size=300))
def test_fuzz_refined_data_bytes(data):
    path = _file("bytes_Facemap_refined_data.npy")
    path.write_bytes(b"\x93NUMPY" + data if data[:1] == b"\1" else data)
    with pytest.raises(TrainingError) as e:
        load_refined_data(path)
    _one_line(e.value)
