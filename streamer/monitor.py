"""The live monitor: a web page of a running pipeline, served from its own process.

A ZeroMQ subscriber of the pipeline's stream plus a small HTTP server
(``_Server``, bounded: see there): ``/`` is one static page (``monitor_page/index.html``, canvas
drawing, nothing fetched from elsewhere) and ``/events`` streams Server-Sent Events to it.
``facestream monitor ENDPOINT`` runs it in the foreground; ``facestream run --monitor`` runs
the same code as a child process (``MonitorProcess``) subscribed to the run's own endpoint.

It costs the pipeline nothing while no page is open: it then subscribes to ``meta`` alone,
and takes ``frame`` and ``preview`` only while at least one page is connected (the
publisher sends previews only while someone subscribes to them). What it forwards is
bounded whatever the pipeline's rate: the newest preview per camera, trace samples at most
``TRACE_HZ`` a second, pushed to each page with each new preview (at most ``PUSH_HZ`` times a
second) or else ``IDLE_PUSH_HZ`` times a second. A page repaints on each update, and in a
browser without a GPU every repaint costs a few ms of CPU whatever changed: so updates follow
the video, and the page draws traces and numbers along with a video frame.
"""
from __future__ import annotations

import io
import ipaddress
import json
import math
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.resources import files

import zmq

from facestream.streamer import protocol
from facestream.streamer.curve import client_options
from facestream.streamer.endpoints import check_endpoint
from facestream.streamer.parent import parent_alive

TRACE_HZ = 30.0  # trace samples forwarded per camera and second, at most (10 s of them span the traces' width)
PUSH_HZ = 10.0  # updates sent to each page per second, at most
IDLE_PUSH_HZ = 4.0  # updates per second when no new preview comes (previews off, or slower than this)
NICE = 10  # the monitor yields the CPU to the pipeline whenever both want it
BATCH_S = 0.1  # while a page is open, messages are taken in batches this far apart (fewer wake-ups)
NEURAL_SHOWN = 4  # neural components forwarded for the traces
WINDOW_S = 2.0  # frames/s and latency percentiles over this many recent seconds
KEEPALIVE_S = 1.0  # a page hears at least this often (a gone page is noticed on the write)
MAX_CONNECTIONS = 32  # requests served at once (each on its own thread; open pages included)
MAX_WAITING = 256  # connections held, without a thread, until their request has arrived
REQUEST_TIMEOUT_S = 5.0  # a connection whose request has not arrived by then is closed
STALLED_PAGE_S = 30.0  # a page that takes nothing for this long is closed (its browser reconnects)
MAX_REQUEST_HEAD = 64 * 1024  # bytes of request line and headers, at most


class MonitorError(OSError):
    """The monitor cannot start (address in use, bad endpoint); the message is one line."""


def local_endpoint(publish: str) -> str:
    """Where a subscriber on this machine reaches a publisher bound to ``publish``."""
    return re.sub(r"^tcp://(\*|0\.0\.0\.0):", "tcp://127.0.0.1:", publish)


def _finite(obj):
    """``obj`` with NaN and infinities as None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _not_json(obj) -> None:
    """What a foreign publisher put in a message that JSON cannot say (binary) is sent as null."""
    return None


def _sample(frame: dict) -> list:
    """One trace sample: [t_s, frame_id, x0, y0, l0, ..., x14, y14, l14, pupil area, neural...]
    (the pupil's area null where it is not measured or not valid)."""
    out = [round(frame["t_capture_ns"] / 1e9, 4), frame["frame_id"]]
    for x, y, likelihood in frame["keypoints"]:
        out += [round(x, 1), round(y, 1), round(likelihood, 3)]
    pupil = frame.get("pupil") or {}
    out.append(round(pupil["area"], 1) if pupil.get("valid") and pupil.get("area") is not None else None)
    out += [round(v, 4) for v in frame["neural"][:NEURAL_SHOWN]]
    return _finite(out)


def _percentile(ordered: list, q: float) -> float:
    """The ``q``-th percentile of sorted values, between ranks as numpy's default (and cheaper
    than numpy on a hundred values, for each page's every update)."""
    k = (len(ordered) - 1) * q / 100
    i = int(k)
    return ordered[i] + (ordered[min(i + 1, len(ordered) - 1)] - ordered[i]) * (k - i)


@dataclass
class _Camera:
    meta: dict | None = None
    meta_version: int = 0
    preview: dict | None = None
    preview_version: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=int(TRACE_HZ * WINDOW_S)))  # (number, sample)
    recent: deque = field(default_factory=deque)  # (t_publish_ns, latency ms) of every frame in the window
    last_sample_ns: int = 0
    last_seq: int | None = None  # seq counts per camera

    def window(self) -> dict:
        """Frames/s and latency (capture to publish, the pipeline's own clock) of recent frames."""
        if len(self.recent) < 2:
            return {"fps": None, "p50": None, "p99": None}
        span_s = (self.recent[-1][0] - self.recent[0][0]) / 1e9
        lat = sorted(r[1] for r in self.recent)
        return {
            "fps": round((len(lat) - 1) / span_s, 2) if span_s > 0 else None,
            "p50": round(_percentile(lat, 50), 2),
            "p99": round(_percentile(lat, 99), 2),
        }


class _Hub:
    """What the subscriber thread has heard, for the page threads to forward."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.cond = threading.Condition()
        self.cameras: dict[str, _Camera] = {}
        self.viewers = 0
        self.version = 0  # counts every message taken, so waiting pages know there is news
        self.numbered = 0  # trace samples numbered so far, all cameras together
        self.lost = 0  # frame messages this monitor lost (gaps in seq) while watching
        self.undecodable = 0
        self.last_message = None  # time.monotonic() of the last message, None before the first
        self.stopping = False

    def _camera(self, name: str) -> _Camera:
        cam = self.cameras.get(name)
        return cam if cam is not None else self.cameras.setdefault(name, _Camera())

    def take(self, topic: bytes, payload: bytes) -> None:
        try:
            data = protocol.unpack(topic, payload)
            if protocol.topic_kind(topic) == protocol.TOPIC_FRAME:
                protocol.check_frame(data)
        except protocol.ProtocolError:
            with self.cond:
                self.undecodable += 1
            return
        with self.cond:
            self.last_message = time.monotonic()
            if topic == protocol.TOPIC_META:
                cameras = data.get("cameras") or [data.get("camera") or {"name": "camera"}]
                for camera in cameras if isinstance(cameras, list) else []:
                    if not isinstance(camera, dict):
                        continue
                    cam = self._camera(str(camera.get("name") or "camera"))
                    cam.meta = _finite({**data, "camera": camera})
                    cam.meta_version += 1
            elif topic == protocol.TOPIC_PREVIEW:
                cam = self._camera(str(data.get("camera") or "camera"))
                cam.preview = data
                cam.preview_version += 1
            else:
                self._take_frame(data)
            self.version += 1
            if protocol.topic_kind(topic) != protocol.TOPIC_FRAME:
                self.cond.notify_all()  # pages wait for a preview; frames alone wake nobody

    def _take_frame(self, data: dict) -> None:
        cam = self._camera(str(data.get("camera") or "camera"))
        seq = data.get("seq")
        if cam.last_seq is not None and isinstance(seq, int) and seq > cam.last_seq + 1:
            self.lost += seq - cam.last_seq - 1
        cam.last_seq = seq
        t_pub = data["t_publish_ns"]
        cam.recent.append((t_pub, (t_pub - data["t_capture_ns"]) / 1e6))
        while cam.recent and cam.recent[0][0] < t_pub - WINDOW_S * 1e9:
            cam.recent.popleft()
        if data["t_capture_ns"] - cam.last_sample_ns >= 1e9 / TRACE_HZ:
            cam.last_sample_ns = data["t_capture_ns"]
            cam.samples.append((self.numbered, _sample(data)))
            self.numbered += 1

    def forget_frames(self) -> None:
        """The last page left: what it was shown goes stale, and the next page starts afresh."""
        with self.cond:
            for cam in self.cameras.values():
                cam.samples.clear()
                cam.recent.clear()
                cam.preview = None
                cam.last_seq = None

    def fresh_preview(self, cursor: "_Cursor") -> bool:
        """Some camera has a preview ``cursor`` has not seen; call with ``cond`` held."""
        return any(cam.preview is not None and cursor.preview.get(name) != cam.preview_version
                   for name, cam in self.cameras.items())

    def update_for(self, cursor: "_Cursor") -> dict:
        """What changed since ``cursor`` (which is moved on); call with ``cond`` held."""
        cameras = {}
        for name, cam in self.cameras.items():
            out: dict = {"samples": [s for n, s in cam.samples if n >= cursor.sample], "window": cam.window()}
            if cursor.meta.get(name) != cam.meta_version and cam.meta is not None:
                out["meta"] = cam.meta
                cursor.meta[name] = cam.meta_version
            if cursor.preview.get(name) != cam.preview_version and cam.preview is not None:
                p = cam.preview
                out["preview"] = {k: p.get(k) for k in
                                  ("frame_id", "width", "height", "frame_width", "frame_height", "jpeg")}
                out["preview"]["keypoints"] = _finite(p.get("keypoints"))
                cursor.preview[name] = cam.preview_version
            cameras[name] = out
        cursor.sample = self.numbered
        cursor.version = self.version
        age = None if self.last_message is None else round(time.monotonic() - self.last_message, 2)
        return {
            "stream": {"endpoint": self.endpoint, "age_s": age, "lost": self.lost, "undecodable": self.undecodable},
            "cameras": cameras,
        }


@dataclass
class _Cursor:
    """How far one page has been brought up to date."""

    sample: int
    version: int = -1
    meta: dict = field(default_factory=dict)
    preview: dict = field(default_factory=dict)


def _page() -> bytes:
    return files("facestream.streamer").joinpath("monitor_page/index.html").read_bytes()


class _HeadThenSocket(io.RawIOBase):
    """What the gate read of a request, then the rest from the socket's own reader."""

    def __init__(self, head: bytes, rest):
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(b)


class _Handler(BaseHTTPRequestHandler):
    server_version = "facestream-monitor"
    timeout = REQUEST_TIMEOUT_S  # on the socket: a stalled client cannot hold a thread for long
    hub: _Hub  # set on the subclass made per server

    def __init__(self, request, client_address, server, head: bytes = b""):
        self._head = head
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        if self._head:
            self.rfile = io.BufferedReader(_HeadThenSocket(self._head, self.rfile))

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = self.path.split("?", 1)[0]
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8",
                       b"open the monitor at http://127.0.0.1 or http://localhost on this machine\n")
        elif path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", _page())
        elif path == "/events":
            self._events()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _host_allowed(self) -> bool:
        """A page served on loopback answers only requests addressed to loopback: a web page
        elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets nothing."""
        if not ipaddress.ip_address(self.server.server_address[0]).is_loopback:
            return True  # served to the network on purpose: any name of this machine will do
        host = (self.headers.get("Host") or "").strip().lower()
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.connection.settimeout(STALLED_PAGE_S)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        hub = self.hub
        with hub.cond:
            hub.viewers += 1
            cursor = _Cursor(sample=hub.numbered)
        pushed = 0.0
        try:
            while True:
                with hub.cond:
                    # with a new preview; else, once IDLE_PUSH_HZ allows, whatever came; else a keepalive
                    hub.cond.wait_for(lambda: hub.stopping or hub.fresh_preview(cursor),
                                      max(0.0, pushed + 1.0 / IDLE_PUSH_HZ - time.monotonic()))
                    if hub.version == cursor.version:
                        hub.cond.wait_for(lambda: hub.stopping or hub.version != cursor.version, KEEPALIVE_S)
                    if hub.stopping:
                        return
                    update = hub.update_for(cursor)
                self.wfile.write(b"data: " + json.dumps(update, separators=(",", ":"), default=_not_json).encode() + b"\n\n")
                self.wfile.flush()
                pushed = time.monotonic()
                time.sleep(1.0 / PUSH_HZ)
        except OSError:
            pass  # the page was closed
        finally:
            with hub.cond:
                hub.viewers -= 1
                hub.cond.notify_all()

    def log_message(self, format, *args) -> None:  # noqa: A002 (the standard library's name)
        pass  # a page's requests are not news


def _say_once(said: set, key: str, line: str) -> None:
    """One line on stderr the first time ``key`` happens; never a traceback."""
    if key not in said:
        said.add(key)
        try:
            print(f"monitor: {line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


class _Server(HTTPServer):
    """The page's HTTP server, bounded whatever connects to it.

    One thread (``serve``) accepts connections and holds them, without a thread each, until
    their request line and headers have arrived: at most ``MAX_WAITING`` of them (beyond that
    the one waiting longest is closed) and each for at most ``REQUEST_TIMEOUT_S``. A complete
    request is then served on a thread of its own, at most ``MAX_CONNECTIONS`` at once; beyond
    that it is answered 503 and closed at once. So half-open connections by the hundred cost
    file descriptors but no threads, and a page's request still gets through among them.
    Whatever goes wrong with one connection closes it; it prints one line the first time (of
    each kind), never a traceback."""

    request_queue_size = 128  # a burst of connections is accepted, not left to SYN retries

    def __init__(self, address, handler):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active = 0  # requests being served, each on its own thread
        self._said: set[str] = set()
        super().__init__(address, handler)
        self.socket.setblocking(False)

    # -- the accepting thread ---------------------------------------------------------------

    def serve(self) -> None:
        waiting: dict[socket.socket, list] = {}  # socket -> [deadline, head so far, address]; oldest first
        with selectors.DefaultSelector() as sel:
            sel.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    ready = [key.fileobj for key, _ in sel.select(0.1)]
                    for sock in ready:  # requests first, then new connections: a request that
                        if sock is not self.socket:  # has arrived is never pushed out by newer ones
                            self._read(sel, waiting, sock)
                    if self.socket in ready:
                        self._accept(sel, waiting)
                    now = time.monotonic()
                    for sock in [s for s, (deadline, *_) in waiting.items() if deadline <= now]:
                        self._drop(sel, waiting, sock)
            except Exception as e:  # noqa: BLE001 (the page stops; the monitor and the run go on)
                _say_once(self._said, "serve", f"the page server stopped: {type(e).__name__}: {e}")
            finally:
                for sock in list(waiting):
                    self._drop(sel, waiting, sock)

    def _accept(self, sel, waiting: dict) -> None:
        for _ in range(self.request_queue_size):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors and such: say so, keep serving
                _say_once(self._said, "accept", f"cannot accept connections: {e.strerror or e}")
                return
            if len(waiting) >= MAX_WAITING:
                _say_once(self._said, "waiting", f"connection limit reached ({MAX_WAITING} waiting for their "
                                                 f"request), closing the oldest")
                self._drop(sel, waiting, next(iter(waiting)))
            sock.setblocking(False)
            waiting[sock] = [time.monotonic() + REQUEST_TIMEOUT_S, b"", address]
            sel.register(sock, selectors.EVENT_READ)

    def _read(self, sel, waiting: dict, sock: socket.socket) -> None:
        entry = waiting.get(sock)
        if entry is None:
            return
        try:
            data = sock.recv(MAX_REQUEST_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, waiting, sock)
            return
        entry[1] += data
        head = entry[1]
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_REQUEST_HEAD:
                self._drop(sel, waiting, sock)
            return
        sel.unregister(sock)
        del waiting[sock]
        self._dispatch(sock, entry[2], head)

    def _drop(self, sel, waiting: dict, sock: socket.socket) -> None:
        waiting.pop(sock, None)
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _dispatch(self, sock: socket.socket, address, head: bytes) -> None:
        with self._lock:
            full = self._active >= MAX_CONNECTIONS
            if not full:
                self._active += 1
        if full:
            _say_once(self._said, "full", f"connection limit reached ({MAX_CONNECTIONS}), refusing more")
            try:
                sock.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
            except OSError:
                pass
            sock.close()
            return
        try:
            threading.Thread(target=self._serve_one, args=(sock, address, head),
                             name="monitor-page", daemon=True).start()
        except RuntimeError as e:  # no more threads for this process
            self._finished()
            sock.close()
            _say_once(self._said, "thread", f"cannot serve a page request: {e}")

    # -- one request, on its own thread -----------------------------------------------------

    def _serve_one(self, sock: socket.socket, address, head: bytes) -> None:
        try:
            sock.setblocking(True)
            self.RequestHandlerClass(sock, address, self, head=head)
        except OSError:
            pass  # the page went away, or took too long
        except Exception as e:  # noqa: BLE001 (one request fails; the monitor goes on)
            _say_once(self._said, "request", f"a page request failed: {type(e).__name__}: {e}")
        finally:
            self.shutdown_request(sock)
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._active -= 1

    @property
    def active(self) -> int:
        return self._active

    def stop(self) -> None:
        self._stop.set()


class Monitor:
    """The subscriber and the HTTP server, each on its own thread; ``close()`` stops both.
    ``curve_server`` and ``curve_key`` subscribe to a CURVE publisher, as in ``Subscriber``."""

    def __init__(self, endpoint: str, host: str = "127.0.0.1", port: int = 8765, curve_server=None, curve_key=None):
        self.hub = _Hub(check_endpoint(endpoint))
        options = client_options(curve_server, curve_key)
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            self._sock.setsockopt(option, value)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise MonitorError(f"cannot subscribe to {endpoint!r}: {e.strerror}") from None
        self._sock.setsockopt(zmq.SUBSCRIBE, protocol.TOPIC_META)
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        try:
            self._http = _Server((host, port), handler)
        except OSError as e:
            self._sock.close(0)
            raise MonitorError(f"cannot serve the monitor on {host}:{port}: {e.strerror or e}") from None
        self._threads = [
            threading.Thread(target=self._subscribe, name="monitor-subscriber", daemon=True),
            threading.Thread(target=self._http.serve, name="monitor-http", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/"

    def _subscribe(self) -> None:
        """Follow the stream; take frames and previews only while a page is open."""
        watching = False
        while not self.hub.stopping:
            if (self.hub.viewers > 0) != watching:
                watching = not watching
                option = zmq.SUBSCRIBE if watching else zmq.UNSUBSCRIBE
                for topic in (protocol.TOPIC_FRAME, protocol.TOPIC_PREVIEW):
                    self._sock.setsockopt(option, topic)
                if not watching:
                    self.hub.forget_frames()
            if self._sock.poll(100, zmq.POLLIN):
                for _ in range(1000):  # what is queued, then look at the viewers again
                    try:
                        topic, payload = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except ValueError:  # not two parts: not protocol v1
                        continue
                    self.hub.take(topic, payload)
                if watching:
                    time.sleep(BATCH_S)
        self._sock.close(0)

    def close(self) -> None:
        with self.hub.cond:
            self.hub.stopping = True
            self.hub.cond.notify_all()
        self._http.stop()
        for thread in self._threads:
            thread.join(2.0)
        self._http.server_close()


def serve(endpoint: str, host: str, port: int, should_stop, announce=print, curve_server=None, curve_key=None) -> None:
    """Run a monitor until ``should_stop()``; ``announce`` gets the page's address. It runs
    ``NICE`` steps below its caller's priority, so that on a busy rig the tracker comes first."""
    os.nice(NICE)
    monitor = Monitor(endpoint, host, port, curve_server, curve_key)
    try:
        announce(monitor.url)
        while not should_stop():
            time.sleep(0.1)
    finally:
        monitor.close()


def _child_main(endpoint: str, host: str, port: int, conn, stop, curve_server, curve_key) -> None:
    """The monitor process of ``run --monitor``: ends when told or when the pipeline is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the pipeline, which stops us

    def announce(url: str) -> None:
        print(f"facestream: monitor on {url}", file=sys.stderr, flush=True)
        conn.send(("ready", url))

    try:
        serve(endpoint, host, port, lambda: stop.is_set() or not parent_alive(), announce, curve_server, curve_key)
    except MonitorError as e:
        conn.send(("error", str(e)))


class MonitorProcess:
    """``run --monitor``: the monitor as a child process of the pipeline. ``keys``: (server
    public, client secret) that a CURVE publisher made for it, handed over with the child's
    start arguments (never a file or the environment)."""

    def __init__(self, ctx, endpoint: str, host: str, port: int, keys: tuple[bytes, bytes] | None = None):
        self._conn, child = ctx.Pipe()
        self._stop = ctx.Event()
        curve_server, curve_key = keys or (None, None)
        self._proc = ctx.Process(target=_child_main,
                                 args=(endpoint, host, port, child, self._stop, curve_server, curve_key),
                                 name="facestream-monitor", daemon=True)
        self.url: str | None = None

    def start(self, timeout: float = 30.0) -> str:
        self._proc.start()
        if not self._conn.poll(timeout):
            raise MonitorError(f"the monitor did not start within {timeout:.0f} s")
        kind, text = self._conn.recv()
        if kind == "error":
            raise MonitorError(text)
        self.url = text
        return text

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def stop(self) -> None:
        self._stop.set()
        if self._proc.pid is not None:
            self._proc.join(3.0)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(1.0)
