"""The ZeroMQ publisher: never waits for a subscriber, numbers every frame message.

Payloads are msgpack or JSON (``encoding``); ``meta`` says which, for subscribers that
cannot tell by themselves.

An XPUB socket (a PUB that also sees subscriptions) lets the pipeline wait, when asked, for
subscribers to arrive before the first frame, so they miss nothing, and send previews only while
someone subscribes to them. Subscriptions are bookkeeping, never a reason to delay a frame: any
local process can send subscribe/unsubscribe messages as fast as it likes, so each look at them
reads at most ``SUBSCRIPTION_READS`` messages (the rest waits for the next look, or for the time
the tracker loop would sleep waiting for a frame: ``idle``; the inbound queue per connection is
held at ``SUBSCRIPTION_HWM``), and at most
``MAX_TOPICS`` distinct topics are tracked (beyond, and topics that match nothing published, are
counted and ignored). ZeroMQ itself still delivers every frame to whoever subscribes to it.

With CURVE keys (``curve_secret``, ``curve_clients``) the socket encrypts everything it sends
and lets in only the clients whose public keys are in the clients folder, checked over ZAP by
an authenticator thread that lives as long as the publisher. A run's own monitor gets a
keypair made for it in memory (``monitor_keys``).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter

import zmq
from zmq.auth.thread import ThreadAuthenticator

from facestream.streamer import protocol
from facestream.streamer.curve import client_keys, keypair


SUBSCRIPTION_READS = 200  # subscription messages read per look (per frame at most a few looks)
SUBSCRIPTION_HWM = 100  # queued subscription messages per connection before ZeroMQ stops reading it
IDLE_READS = 200  # subscription messages read while the tracker loop waits for a frame, per poll
MAX_TOPICS = 256  # distinct subscribed topics tracked; more are counted and ignored


class PublishError(RuntimeError):
    """The endpoint cannot be bound, or the CURVE settings do not go together; the message is one line."""


class _Clients:
    """ZAP's credentials provider: the clients folder's public keys and the run's own monitor's."""

    def __init__(self, keys: set[bytes]):
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


class Publisher:
    def __init__(self, endpoint: str, send_hwm: int = 1000, linger_ms: int = 1000, encoding: str = "msgpack",
                 curve_secret: str = "", curve_clients: str = ""):
        if encoding not in protocol.ENCODINGS:
            raise PublishError(f"unknown encoding {encoding!r} (known: {', '.join(protocol.ENCODINGS)})")
        if bool(curve_secret) != bool(curve_clients):
            raise PublishError("CURVE needs both the server's secret key file and the clients folder: "
                               "encryption without authentication would let anyone subscribe")
        self.endpoint = endpoint
        self.encoding = encoding
        self._ctx = zmq.Context.instance()
        self._auth: ThreadAuthenticator | None = None
        self.monitor_keys: tuple[bytes, bytes] | None = None  # (server public, client secret) for the run's monitor
        if curve_secret:
            server_public, server_secret = keypair(curve_secret)
            monitor_public, monitor_secret = zmq.curve_keypair()
            allowed = client_keys(curve_clients) | {monitor_public}
            # ZAP serves a whole context: the socket gets one of its own, which ends with it
            self._auth = ThreadAuthenticator(zmq.Context())
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=_Clients(allowed))
            self.monitor_keys = (server_public, monitor_secret)
        self._sock = (self._ctx if self._auth is None else self._auth.context).socket(zmq.XPUB)
        if curve_secret:  # before bind: no client is let in unchecked
            self._sock.curve_server = True
            self._sock.curve_secretkey = server_secret
            self._sock.curve_publickey = server_public
        self._sock.setsockopt(zmq.SNDHWM, send_hwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        # Every subscribe and unsubscribe reaches us, a departing subscriber's included, so the
        # per-topic counts stay exact (plain XPUB_VERBOSE hides repeated unsubscribes).
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_HWM)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._stop_authenticator()
            raise PublishError(f"cannot publish on {endpoint}: {e.strerror}") from None
        self.seqs: Counter[str] = Counter()  # camera -> frame messages sent on its topic
        self.subscriptions: Counter[bytes] = Counter()  # topic prefix -> subscriptions to it (none at 0)
        self.subscription_messages = 0  # subscribe/unsubscribe messages read
        self.subscriptions_ignored = 0  # of those, for topics not tracked (over MAX_TOPICS, or matching nothing)
        self._tees: list[zmq.Socket] = []
        self._tee_dir: str | None = None
        self.tee_dropped = 0  # messages a tee's full queue refused, all tees together

    def _stop_authenticator(self) -> None:
        """After the socket is closed: the authenticator and the socket's context end (what the
        socket still had queued goes out first, for at most its LINGER)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth.context.term()
            self._auth = None

    def open_tee(self, hwm: int = 100_000) -> str:
        """A PUSH socket that gets a copy of every message (for the recorder); its deep queue
        absorbs disk stalls, and what overflows it is counted.

        It is an ipc socket in a folder only this user can enter: a PUSH socket shares its
        messages out among whoever connects, so a port any local process could reach would let
        one take frames away from the recording."""
        if self._tee_dir is None:
            self._tee_dir = tempfile.mkdtemp(prefix="facestream-")  # mode 0700
        tee = self._ctx.socket(zmq.PUSH)
        tee.setsockopt(zmq.SNDHWM, hwm)
        tee.setsockopt(zmq.LINGER, 5000)
        endpoint = f"ipc://{self._tee_dir}/tee-{len(self._tees)}"
        tee.bind(endpoint)
        self._tees.append(tee)
        return endpoint

    @staticmethod
    def _relevant(prefix: bytes) -> bool:
        """Whether a subscription to ``prefix`` receives anything published here (or a frame
        topic, of a camera that may come)."""
        return any(t.startswith(prefix) for t in protocol.TOPICS) or prefix.startswith(protocol.TOPIC_FRAME + b"/")

    def _read_subscriptions(self, limit: int = SUBSCRIPTION_READS) -> int:
        """Read at most ``limit`` queued subscription messages (a flood waits for later looks);
        how many were read."""
        subs = self.subscriptions
        for n in range(limit):
            try:
                event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return n
            self.subscription_messages += 1
            kind, prefix = event[:1], event[1:]
            if kind not in (b"\x00", b"\x01"):
                continue
            if prefix not in subs and (kind == b"\x00" or len(subs) >= MAX_TOPICS or not self._relevant(prefix)):
                self.subscriptions_ignored += 1
                continue
            if kind == b"\x01":
                subs[prefix] += 1
            elif subs[prefix] > 1:
                subs[prefix] -= 1
            else:
                del subs[prefix]
        return limit

    def idle(self, seconds: float) -> None:
        """Spend ``seconds`` the tracker loop would otherwise sleep (waiting for a frame) reading
        at most ``IDLE_READS`` queued subscription messages, then sleeping: a flood's backlog
        inside ZeroMQ drains, at a pace that leaves the CPU to the camera; never longer than
        ``seconds``."""
        deadline = time.monotonic() + seconds
        self._read_subscriptions(IDLE_READS)
        rest = deadline - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def subscription_report(self) -> dict:
        """For ``meta``: topics tracked, subscribe/unsubscribe messages read and ignored."""
        return {"topics": len(self.subscriptions), "frame_subscriptions": self._frame_subscriptions(),
                "messages": self.subscription_messages, "ignored": self.subscriptions_ignored}

    def subscribers(self, topic: bytes, named: bool = False) -> int:
        """Subscriptions that receive ``topic`` (its prefixes); ``named`` leaves out the empty
        prefix, a subscription to everything."""
        self._read_subscriptions()
        return sum(n for prefix, n in self.subscriptions.items() if topic.startswith(prefix) and (prefix or not named))

    @property
    def frame_subscriptions(self) -> int:
        """Subscriptions that receive some camera's frames: to everything, to ``frame`` or to one
        camera's ``frame/<name>``."""
        self._read_subscriptions()
        return self._frame_subscriptions()

    def _frame_subscriptions(self) -> int:
        frame = protocol.TOPIC_FRAME
        return sum(n for prefix, n in self.subscriptions.items() if frame.startswith(prefix) or prefix.startswith(frame + b"/"))

    def wait_for_subscribers(self, n: int, should_stop, poll_s: float = 0.05) -> bool:
        """Block until ``n`` subscriptions to frames have arrived; False if ``should_stop()`` first."""
        while True:
            self._read_subscriptions(10 * SUBSCRIPTION_READS)  # no frame waits yet; should_stop is still heard
            if self._frame_subscriptions() >= n:
                return True
            if should_stop():
                return False
            self._sock.poll(int(poll_s * 1000), zmq.POLLIN)

    def publish_frame(self, fields: dict) -> dict:
        """Send one frame message on its camera's topic; ``v``, ``seq`` (counted per camera) and
        ``t_publish_ns`` are added here."""
        camera = fields["camera"]
        message = {"v": protocol.VERSION, "seq": self.seqs[camera], **fields, "t_publish_ns": time.monotonic_ns()}
        self._send(protocol.frame_topic(camera), message)
        self.seqs[camera] += 1
        return message

    def publish_meta(self, fields: dict) -> None:
        self._read_subscriptions()
        self._send(protocol.TOPIC_META, {"v": protocol.VERSION, "encoding": self.encoding, **fields})

    def publish_preview(self, fields: dict) -> None:
        """Send one ``preview`` to subscribers only: a recording has no use for it."""
        payload = protocol.pack({"v": protocol.VERSION, **fields, "t_publish_ns": time.monotonic_ns()}, self.encoding)
        try:
            self._sock.send_multipart([protocol.TOPIC_PREVIEW, payload], zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _send(self, topic: bytes, message: dict) -> None:
        parts = [topic, protocol.pack(message, self.encoding)]
        # PUB sockets drop, never block, when a subscriber's queue is full; NOBLOCK makes sure.
        try:
            self._sock.send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:
            pass
        for tee in self._tees:
            try:
                tee.send_multipart(parts, zmq.NOBLOCK)
            except zmq.Again:
                self.tee_dropped += 1

    def close(self) -> None:
        self._sock.close()
        for tee in self._tees:
            tee.close()  # a connected recorder still receives what was queued (LINGER)
        self._stop_authenticator()
        if self._tee_dir is not None:
            shutil.rmtree(self._tee_dir, ignore_errors=True)
