"""The live monitor: previews on the wire, the monitor process, and its page in a real Chromium."""
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import psutil
import pytest
import zmq

from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer import protocol
from facestream.streamer.client import Subscriber
from facestream.streamer.monitor import NICE
from facestream.streamer.preview import Previews
from facestream.streamer.publisher import Publisher

from helpers import free_port, until

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _page_up(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out, err


@pytest.fixture
def chromium():
    """A headless Debian Chromium driven by Playwright; skipped where neither is installed,
    except in CI, which installs both (.ci/run)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        why = "needs the playwright package and Debian's chromium (.ci/run installs both)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- the publisher's per-topic counts and the preview topic ----------------------------------

def test_publisher_counts_subscriptions_per_topic_and_sees_them_leave(endpoint):
    pub = Publisher(endpoint)
    ctx = zmq.Context.instance()
    socks = {}
    try:
        for name, topics in {"preview": [b"preview"], "everything": [b""], "frame": [b"frame", b"meta"]}.items():
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            for t in topics:
                s.setsockopt(zmq.SUBSCRIBE, t)
            socks[name] = s
        until(lambda: pub.subscribers(protocol.TOPIC_META) == 2 and pub.subscribers(protocol.TOPIC_PREVIEW) == 2,
               what="the three subscribers")
        assert pub.subscribers(protocol.TOPIC_PREVIEW, named=True) == 1
        assert pub.subscribers(protocol.TOPIC_PREVIEW) == 2  # the subscriber to everything receives it too
        assert pub.frame_subscriptions == 2 and pub.subscribers(protocol.TOPIC_META) == 2
        socks.pop("preview").close()
        until(lambda: pub.subscribers(protocol.TOPIC_PREVIEW, named=True) == 0, what="the preview subscriber to leave")
        socks.pop("frame").close()
        until(lambda: pub.frame_subscriptions == 1, what="the frame subscriber to leave")
    finally:
        for s in socks.values():
            s.close()
        pub.close()


def _run(endpoint, *args):
    return subprocess.Popen([*CLI, "run", "--publish", endpoint, "--fps", "25", "--wait-subscribers", "1",
                             "--policy", "every", "--json", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect_until_final(sock, timeout=90.0) -> list[tuple[bytes, dict]]:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sock.poll(500):
            continue
        topic, payload = sock.recv_multipart()
        message = protocol.unpack(topic, payload)
        got.append((topic, message))
        if topic == protocol.TOPIC_META and message["status"] in ("ended", "stopped", "failed"):
            break
    return got


def test_pipeline_sends_no_preview_to_a_subscriber_of_everything(endpoint):
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    try:
        proc = _run(endpoint, "--frames", "40")
        got = _collect_until_final(sock)
    finally:
        sock.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    topics = [t for t, _ in got]
    assert topics.count(protocol.frame_topic("cam0")) == 40
    assert protocol.TOPIC_PREVIEW not in topics


def test_pipeline_previews_the_newest_frame_at_a_bounded_rate_while_subscribed(endpoint, tmp_path):
    config = tmp_path / "preview.toml"
    config.write_text("[monitor]\npreview_fps = 5.0\npreview_width = 200\n")
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for t in (protocol.TOPIC_FRAME, protocol.TOPIC_META, protocol.TOPIC_PREVIEW):
        sock.setsockopt(zmq.SUBSCRIBE, t)
    sock.connect(endpoint)
    try:
        proc = _run(endpoint, "--frames", "60", "--config", str(config))
        got = _collect_until_final(sock)
    finally:
        sock.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    frames = {m["frame_id"]: m for t, m in got if protocol.topic_kind(t) == protocol.TOPIC_FRAME}
    previews = [m for t, m in got if t == protocol.TOPIC_PREVIEW]
    assert len(frames) == 60 and len(previews) >= 2
    for p in previews:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(p["jpeg"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape == (p["height"], p["width"]) == (150, 200)  # 640x480 shrunk to 200 wide
        assert (p["frame_width"], p["frame_height"]) == (640, 480) and p["camera"] == "cam0"
        assert p["keypoints"] == frames[p["frame_id"]]["keypoints"]  # drawn where that frame's message says
        assert p["t_capture_ns"] == frames[p["frame_id"]]["t_capture_ns"]
    # never more often than preview_fps: offers are 1/5 s apart, so n previews span at least
    # (n - 1) / 5 s less one JPEG encoding (0.1 s is generous); the bound, not a speed
    span_s = (previews[-1]["t_publish_ns"] - previews[0]["t_publish_ns"]) / 1e9
    assert len(previews) - 1 <= (span_s + 0.1) * 5.0


# -- the monitor process --------------------------------------------------------------------

def _fake_frame(camera: str, frame_id: int, shape=(240, 320)) -> tuple[np.ndarray, list]:
    """A frame with a bright disc that moves, and keypoints around it."""
    h, w = shape
    pixels = np.full(shape, 40, np.uint8)
    cx, cy = int(w * (0.3 + 0.4 * (frame_id % 20) / 20)), h // 2 + (20 if camera == "right" else -20)
    cv2.circle(pixels, (cx, cy), 30, 220, -1)
    angles = np.linspace(0, 2 * np.pi, len(BODYPARTS), endpoint=False)
    keypoints = [[cx + 40 * np.cos(a), cy + 40 * np.sin(a), 0.55 + 0.4 * i / len(BODYPARTS)]
                 for i, a in enumerate(angles)]
    return pixels, keypoints


PAW = BODYPARTS.index("paw")


class _FakeRig(threading.Thread):
    """Publishes two cameras' meta, frames and previews as a multi-camera pipeline would.
    ``hidden_paw``: every other frame the paw is hidden (likelihood 0.5) and the tracker's guess
    for it 285 px off, as Facemap's is for a paw out of view. The left camera's pupil is measured:
    its area between 300 and 500 px^2, and one frame in 5 not valid (a blink, area 5000)."""

    def __init__(self, endpoint: str, hidden_paw: bool = False):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.hidden_paw = hidden_paw
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        pub = Publisher(self.endpoint)
        previews = {camera: Previews(pub, fps=10.0, width=160) for camera in ("left", "right")}
        self.ready.set()
        frame_id, next_meta = 0, 0.0
        try:
            while not self.stop.is_set():
                for camera in ("left", "right"):
                    if time.monotonic() >= next_meta:
                        pub.publish_meta({
                            "status": "running", "bodyparts": list(BODYPARTS), "policy": "latest",
                            "camera": {"name": camera, "width": 320, "height": 240, "fps": 30.0},
                            "tracker": {"engine": "onnx", "model": "test"}, "encoder": {"trained": True},
                            "neural": {"kind": "pcs", "length": 3},
                            "pupil": {"region_scale": 0.85} if camera == "left" else None,
                            "recording": {"path": "/data/session.h5", "dropped": 0} if camera == "left" else None,
                            "stats": {"fps": 30.0, "latency_ms": {"p50": 5.0, "p99": 9.0},
                                      "dropped": {"total": 3, "camera": 0, "overrun": 0, "skipped": 3}},
                        })
                    pixels, keypoints = _fake_frame(camera, frame_id)
                    if self.hidden_paw and frame_id % 2:
                        x, y, _ = keypoints[PAW]
                        keypoints[PAW] = [x + 285, y - 285, 0.5]
                    t = time.monotonic_ns()
                    pub.publish_frame({"frame_id": frame_id, "t_capture_ns": t - 4_000_000, "t_camera_ns": None,
                                       "camera": camera, "keypoints": keypoints,
                                       "neural": [np.sin(frame_id / 7 + k) for k in range(3)], "dropped": 3,
                                       **({} if camera != "left" else {"pupil": {
                                           "area": 400 + 100 * np.sin(frame_id / 5) if frame_id % 5 else 5000.0,
                                           "centre": [100.0, 80.0], "axes": [12.0, 11.0], "valid": bool(frame_id % 5)}})})
                    previews[camera].offer(pixels, frame_id, t, camera, keypoints)
                if time.monotonic() >= next_meta:
                    next_meta = time.monotonic() + 0.5
                frame_id += 1
                time.sleep(1 / 30)
        finally:
            pub.close()


def _monitor(endpoint: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([*CLI, "monitor", endpoint, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: _page_up(port) or proc.poll() is not None, what="the monitor page")
    assert proc.poll() is None, proc.communicate()[1]
    return proc


@contextlib.contextmanager
def _rig_watched(endpoint: str, hidden_paw: bool = False):
    """A fake two-camera rig publishing on ``endpoint`` and `facestream monitor` on it; the page's port."""
    port = free_port()
    rig = _FakeRig(endpoint, hidden_paw=hidden_paw)
    rig.start()
    rig.ready.wait(10)
    proc = _monitor(endpoint, port)
    try:
        yield port
    finally:
        rig.stop.set()
        _stop(proc)


def _events(port: int) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    return response


def _next_update(response) -> dict:
    while True:
        line = response.readline()
        assert line, "the event stream ended"
        if line.startswith(b"data: "):
            return json.loads(line[6:])


def test_monitor_takes_frames_only_while_a_page_is_open(endpoint):
    """With no page open the pipeline spends nothing on the monitor beyond `meta`."""
    port = free_port()
    pub = Publisher(endpoint)
    proc = _monitor(endpoint, port)
    try:
        until(lambda: pub.subscribers(protocol.TOPIC_META) == 1, what="the monitor's meta subscription")
        assert pub.frame_subscriptions == 0 and pub.subscribers(protocol.TOPIC_PREVIEW, named=True) == 0
        events = _events(port)
        until(lambda: pub.frame_subscriptions == 1 and pub.subscribers(protocol.TOPIC_PREVIEW, named=True) == 1,
               what="frame and preview subscriptions once a page is open")
        events.close()
        until(lambda: pub.frame_subscriptions == 0 and pub.subscribers(protocol.TOPIC_PREVIEW, named=True) == 0,
               what="the monitor to unsubscribe after the page left")
        assert pub.subscribers(protocol.TOPIC_META) == 1
    finally:
        _stop(proc)
        pub.close()
    assert proc.returncode == 0


def test_monitor_forwards_each_cameras_frames_previews_and_meta(endpoint):
    with _rig_watched(endpoint) as port:
        monitor = next(c for c in psutil.Process().children() if "monitor" in c.cmdline())
        assert monitor.nice() == min(19, os.nice(0) + NICE)  # a viewer yields the CPU to the pipeline
        events = _events(port)
        seen: dict[str, dict] = {}

        def all_arrived() -> bool:
            for name, cam in _next_update(events)["cameras"].items():
                got = seen.setdefault(name, {"samples": 0})
                got["samples"] += len(cam["samples"])
                got.update({k: cam[k] for k in ("meta", "preview", "window") if k in cam})
            return set(seen) == {"left", "right"} and all(
                "meta" in c and "preview" in c and c["samples"] >= 5 for c in seen.values())

        until(all_arrived, what="both cameras' frames, previews and meta")
        events.close()
    for name, cam in seen.items():
        assert cam["meta"]["camera"]["name"] == name
        pixels = cv2.imdecode(np.frombuffer(base64.b64decode(cam["preview"]["jpeg"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (120, 160)
        _, keypoints = _fake_frame(name, cam["preview"]["frame_id"])
        assert np.allclose(cam["preview"]["keypoints"], keypoints)
        assert cam["window"]["fps"] > 0 and cam["window"]["p50"] == pytest.approx(4.0, abs=2.0)


@pytest.mark.parametrize("args, words", [
    (["not-an-endpoint"], ["not-an-endpoint"]),
    (["tcp://127.0.0.1:5555", "--host", "203.0.113.1"], ["cannot serve", "203.0.113.1"]),
])
def test_monitor_bad_input_is_one_line_and_non_zero(args, words):
    r = subprocess.run([*CLI, "monitor", *args, "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error:") and all(w in lines[0] for w in words), r.stderr


def test_run_with_a_monitor_port_in_use_fails_in_one_line(endpoint):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--quiet", "--monitor-port", str(port)],
                           capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("facestream: error:") and f"127.0.0.1:{port}" in last and "Traceback" not in r.stderr


def test_monitor_settings_are_checked(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[monitor]\npreview_fps = 99.0\n")
    r = subprocess.run([*CLI, "run", "--config", str(config), "--frames", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "[monitor] preview_fps" in r.stderr.strip().splitlines()[-1]


# -- the page in a real browser -------------------------------------------------------------

def _video(page, camera: str) -> tuple[dict, str]:
    """What the camera's canvas shows now: the frame and keypoints drawn, and a digest of its pixels."""
    return page.evaluate("""(name) => {
        const c = document.querySelector(`section[data-camera="${name}"] canvas.frame`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let h = 0; for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
        return [window.facestreamMonitor.cameras.get(name).drawn, c.width + 'x' + c.height + ':' + h]; }""", camera)


@pytest.mark.parametrize("decoder", ["ImageDecoder", "createImageBitmap"])
def test_page_shows_the_live_video_and_its_keypoints(endpoint, chromium, tmp_path, decoder):
    """The same with the browser's ImageDecoder and, for browsers without one, through a Blob."""
    port = free_port()
    with Subscriber(endpoint, topics=("frame",)) as sub:
        run = subprocess.Popen([*CLI, "run", "--publish", endpoint, "--fps", "25", "--quiet", "--monitor-port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            until(lambda: _page_up(port) or run.poll() is not None, 90, "the monitor of `run --monitor-port`")
            assert run.poll() is None, run.communicate()[1]
            page = chromium.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            if decoder == "createImageBitmap":
                page.add_init_script("delete window.ImageDecoder")
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.evaluate("typeof ImageDecoder") == ("function" if decoder == "ImageDecoder" else "undefined")
            page.wait_for_function("() => document.querySelector('canvas.frame')?.dataset.frameId", timeout=60_000)
            first, first_digest = _video(page, "cam0")
            page.wait_for_function(f"() => +document.querySelector('canvas.frame').dataset.frameId > {first['frame_id']}",
                                   timeout=60_000)
            second, second_digest = _video(page, "cam0")
            page.wait_for_function("() => window.facestreamMonitor.cameras.get('cam0').samples.length > 10",
                                   timeout=60_000)
            page.wait_for_function(r"() => /\d/.test(document.querySelector('.tile.fps .value').textContent)",
                                   timeout=60_000)
            fps_text = page.inner_text(".tile.fps .value")
            shot = tmp_path / "monitor.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            _, err = _stop(run)
        frames = {}  # every frame message of the run, now that it has stopped
        while (m := sub.recv(timeout=0.5)) is not None:
            frames[m.data["frame_id"]] = m.data
    assert run.returncode == 0, err
    assert not errors
    assert second["frame_id"] > first["frame_id"] and second_digest != first_digest  # the picture itself changed
    for drawn in (first, second):  # the keypoints drawn are those the pipeline published for that frame
        np.testing.assert_allclose(drawn["keypoints"], frames[drawn["frame_id"]]["keypoints"])
    assert float(fps_text) > 0
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] == 1400 and image.std() > 10


def test_page_lays_out_one_panel_per_camera_side_by_side(endpoint, chromium, tmp_path):
    with _rig_watched(endpoint) as port:
        page = chromium.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("""() => ['left', 'right'].every(n =>
            document.querySelector(`section[data-camera="${n}"] canvas.frame`)?.dataset.frameId)""", timeout=60_000)
        # the REC tiles come from `meta` (every 0.5 s), which may reach the page after both cameras' frames
        page.wait_for_function("""() => document.querySelector('section[data-camera="left"] .tile.rec .value')
            ?.textContent.includes('REC')""", timeout=10_000)
        boxes = {n: page.locator(f'section[data-camera="{n}"]').bounding_box() for n in ("left", "right")}
        rec = {n: page.inner_text(f'section[data-camera="{n}"] .tile.rec .value') for n in ("left", "right")}
        page.screenshot(path=str(tmp_path / "two-cameras.png"), full_page=True)
    assert boxes["left"]["y"] == boxes["right"]["y"] and boxes["left"]["x"] + boxes["left"]["width"] <= boxes["right"]["x"]
    assert rec == {"left": "● REC", "right": "off"}


def test_page_traces_leave_hidden_keypoints_out_of_their_scale(endpoint, chromium):
    """A hidden keypoint's guessed positions (likelihood below 0.6) are a gap in its trace and
    do not stretch its row: the paw's row keeps the scale of where the paw was seen."""
    with _rig_watched(endpoint, hidden_paw=True) as port:
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("""() => { const c = window.facestreamMonitor.cameras.get('left');
            return c && c.samples.length > 30 && c.ranges.paw; }""", timeout=60_000)
        paw, nose = page.evaluate("""() => { const r = window.facestreamMonitor.cameras.get('left').ranges;
            return [r.paw, r['nose(tip)']]; }""")
    # seen, the paw moves with the disc: at most 128 px across, so within ±100 px of its mean
    assert 10 < paw[1] < 100, paw
    assert paw == [-paw[1], paw[1]] and nose[1] > 10  # rows are centred; the others still move


def test_page_plots_the_valid_pupil_area_of_cameras_that_measure_it(endpoint, chromium):
    with _rig_watched(endpoint) as port:
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("""() => { const c = window.facestreamMonitor.cameras.get('left');
            return c && c.samples.length > 30 && c.ranges['pupil area']; }""", timeout=60_000)
        left, right = page.evaluate("""() => ['left', 'right'].map(n =>
            window.facestreamMonitor.cameras.get(n).ranges['pupil area'] || null)""")
    assert 300 <= left[0] < left[1] <= 500, left  # the frames not valid (area 5000) are left out
    assert right is None
