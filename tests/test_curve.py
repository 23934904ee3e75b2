"""CURVE: key files, an encrypted and authenticated stream from `facestream run`, the bytes on
the wire, bad keys refused in one line, and the run's own monitor behind CURVE."""
import json
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest
import zmq

from facestream.streamer import curve, protocol
from facestream.streamer.client import Subscriber
from facestream.streamer.publisher import Publisher, PublishError

from helpers import free_port, until

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
FINAL = ("ended", "stopped", "failed")


@pytest.fixture
def keys(tmp_path):
    """A server pair, an authorised client's pair, a stranger's pair (not in the clients folder),
    the clients folder (the authorised client's public file only) and a config using them."""
    folder = tmp_path / "keys"
    (server_public, server_secret), (client_public, client_secret) = curve.create(folder, ["server", "client"])
    [(_, stranger_secret)] = curve.create(tmp_path / "elsewhere", ["stranger"])
    clients = tmp_path / "clients"
    clients.mkdir()
    shutil.copy(client_public, clients)
    config = tmp_path / "curve.toml"
    config.write_text(f'[stream]\ncurve_secret = "{server_secret}"\ncurve_clients = "{clients}"\n')
    return SimpleNamespace(folder=folder, server_public=server_public, server_secret=server_secret,
                           client_secret=client_secret, stranger_secret=stranger_secret, clients=clients, config=config)


def _run(endpoint: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "run", "--publish", endpoint, "--fps", "25", "--quiet", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


# -- key files --------------------------------------------------------------------------------

def test_keys_writes_four_files_secret_ones_private_and_never_overwrites(tmp_path):
    folder = tmp_path / "keys"
    r = subprocess.run([*CLI, "keys", str(folder)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    names = {"server.key", "server.key_secret", "client.key", "client.key_secret"}
    assert {p.name for p in folder.iterdir()} == names
    for name in ("server", "client"):
        assert stat.S_IMODE((folder / f"{name}.key_secret").stat().st_mode) == 0o600
        public, secret = curve.keypair(folder / f"{name}.key_secret")
        assert curve.public_key(folder / f"{name}.key") == public and zmq.curve_public(secret) == public
    assert curve.public_key(folder / "server.key") != curve.public_key(folder / "client.key")
    before = {name: (folder / name).read_bytes() for name in names}

    again = subprocess.run([*CLI, "keys", str(folder)], capture_output=True, text=True, timeout=60)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 1 and len(lines) == 1 and lines[0].startswith("facestream: error:") and "exists" in lines[0]
    assert {name: (folder / name).read_bytes() for name in names} == before

    rig2 = subprocess.run([*CLI, "keys", str(folder), "--client", "rig2"], capture_output=True, text=True, timeout=60)
    assert rig2.returncode == 0, rig2.stderr
    assert {p.name for p in folder.iterdir()} == names | {"rig2.key", "rig2.key_secret"}
    assert {name: (folder / name).read_bytes() for name in names} == before  # the server's pair untouched
    assert stat.S_IMODE((folder / "rig2.key_secret").stat().st_mode) == 0o600
    assert curve.keypair(folder / "rig2.key_secret")[0] == curve.public_key(folder / "rig2.key")
    refused = subprocess.run([*CLI, "keys", str(folder), "--client", "rig2"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "rig2.key" in refused.stderr and "Traceback" not in refused.stderr


# -- who receives -----------------------------------------------------------------------------

def test_only_a_subscriber_whose_key_is_in_the_clients_folder_receives(endpoint, keys):
    authorised = Subscriber(endpoint, curve_server=keys.server_public, curve_key=keys.client_secret)
    keyless = Subscriber(endpoint)
    stranger = Subscriber(endpoint, curve_server=keys.server_public, curve_key=keys.stranger_secret)
    others = {"keyless": 0, "stranger": 0}
    frames, final = [], None
    listens: dict[str, subprocess.Popen] = {}
    listen_failed_at = None
    proc = _run(endpoint, "--config", str(keys.config), "--duration", "20", "--wait-subscribers", "1")
    try:
        deadline = time.monotonic() + 120
        while final is None and time.monotonic() < deadline:
            m = authorised.recv(timeout=0.2)
            if m is not None and m.topic == "frame":
                frames.append((time.monotonic(), m.data))
            elif m is not None and m.data["status"] in FINAL:
                final = m.data
            for name, sub in (("keyless", keyless), ("stranger", stranger)):
                while sub.recv(timeout=0) is not None:
                    others[name] += 1
            if frames and not listens:  # the stream is live: the command line's view of it
                listens["authorised"] = subprocess.Popen(
                    [*CLI, "listen", endpoint, "--curve-server", str(keys.server_public), "--curve-key",
                     str(keys.client_secret), "--count", "3", "--timeout", "60"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                listens["keyless"] = subprocess.Popen([*CLI, "listen", endpoint, "--timeout", "3"],
                                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if listen_failed_at is None and listens and select.select([listens["keyless"].stderr], [], [], 0)[0]:
                listen_failed_at = time.monotonic()  # its one line is out
        err = _finish(proc)
        outputs = {name: p.communicate(timeout=60) for name, p in listens.items()}
    finally:
        for sub in (authorised, keyless, stranger):
            sub.close()
        for p in listens.values():
            if p.poll() is None:
                p.kill()
    assert final is not None and final["status"] == "stopped", err
    assert len(frames) >= 10 and frames[0][1]["seq"] == 0 and authorised.lost == 0
    assert others == {"keyless": 0, "stranger": 0}
    out, listen_err = outputs["authorised"]
    assert listens["authorised"].returncode == 0, listen_err
    assert sum(line.startswith("frame") for line in out.splitlines()) == 3
    keyless_err = outputs["keyless"][1]
    lines = keyless_err.strip().splitlines()
    assert listens["keyless"].returncode == 1 and len(lines) == 1, keyless_err
    assert lines[0].startswith("facestream: error: no message from") and "Traceback" not in keyless_err
    # the stream went on while `listen` without keys heard nothing
    assert listen_failed_at is not None and frames[-1][0] > listen_failed_at


# -- the bytes on the wire --------------------------------------------------------------------

class _Relay(threading.Thread):
    """A TCP relay on 127.0.0.1 between subscribers and the publisher that records every byte,
    both ways."""

    def __init__(self, target_port: int):
        super().__init__(daemon=True)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:  # the publisher is not bound yet: the subscriber reconnects
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()
        self.listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.recorded += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.parametrize("encrypted", [True, False], ids=["curve", "plain-control"])
def test_curve_leaves_no_plaintext_on_the_wire(endpoint, keys, encrypted):
    relay = _Relay(int(endpoint.rsplit(":", 1)[1]))
    relay.start()
    via = f"tcp://127.0.0.1:{relay.port}"
    sub = (Subscriber(via, curve_server=keys.server_public, curve_key=keys.client_secret) if encrypted
           else Subscriber(via))
    config = ["--config", str(keys.config)] if encrypted else []
    frames, final = 0, None
    proc = _run(endpoint, *config, "--frames", "10", "--policy", "every", "--wait-subscribers", "1")
    try:
        deadline = time.monotonic() + 120
        while final is None and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                frames += 1
            elif m is not None and m.data["status"] in FINAL:
                final = m.data["status"]
        _finish(proc)
    finally:
        sub.close()
        relay.stopping = True
        relay.join(5)
    assert frames == 10 and final == "stopped"  # everything went through the relay
    with relay.lock:
        wire = bytes(relay.recorded)
    assert len(wire) > 10 * 1000  # ten frame messages of 15 keypoints and 128 floats
    for plaintext in (b"keypoints", b"frame/cam0", b"bodyparts"):
        assert (plaintext in wire) is not encrypted, plaintext


# -- bad keys ---------------------------------------------------------------------------------

def _bad_config(keys, tmp_path, case: str) -> tuple[str, list[str], int]:
    """A config for one bad case: (its text, words the error names, exit code)."""
    not_a_certificate = tmp_path / "notes.txt"
    not_a_certificate.write_text("these are not keys\n")
    clients = f'curve_clients = "{keys.clients}"\n'
    return {
        "missing secret": (f'curve_secret = "{tmp_path}/nowhere.key_secret"\n{clients}', ["nowhere.key_secret", "not found"], 1),
        "not a certificate": (f'curve_secret = "{not_a_certificate}"\n{clients}', ["notes.txt", "not a ZeroMQ certificate"], 1),
        "public for secret": (f'curve_secret = "{keys.server_public}"\n{clients}', ["server.key", "no secret key"], 1),
        "secret without clients": (f'curve_secret = "{keys.server_secret}"\n', ["curve_secret", "curve_clients"], 2),
        "clients folder missing": (f'curve_secret = "{keys.server_secret}"\ncurve_clients = "{tmp_path}/gone"\n',
                                   ["gone", "not found"], 1),
    }[case]


@pytest.mark.parametrize("case", ["missing secret", "not a certificate", "public for secret", "secret without clients",
                                  "clients folder missing"])
def test_run_with_bad_curve_settings_fails_in_one_line(endpoint, keys, tmp_path, case):
    text, words, code = _bad_config(keys, tmp_path, case)
    config = tmp_path / "bad.toml"
    config.write_text("[stream]\n" + text)
    r = subprocess.run([*CLI, "run", "--config", str(config), "--publish", endpoint, "--frames", "1", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    assert last.startswith("facestream: error:") and all(w in last for w in words), last


@pytest.mark.parametrize("command", ["listen", "monitor"])
@pytest.mark.parametrize("case", ["missing", "not a certificate", "public for secret", "server only"])
def test_subscribers_with_bad_key_files_fail_in_one_line(endpoint, keys, tmp_path, command, case):
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"\x00\xff not a certificate\n")
    flags, words = {
        "missing": (["--curve-server", str(tmp_path / "absent.key"), "--curve-key", str(keys.client_secret)], ["absent.key", "not found"]),
        "not a certificate": (["--curve-server", str(junk), "--curve-key", str(keys.client_secret)], ["junk.key", "not a ZeroMQ certificate"]),
        "public for secret": (["--curve-server", str(keys.server_public), "--curve-key", str(keys.server_public)], ["server.key", "no secret key"]),
        "server only": (["--curve-server", str(keys.server_public)], ["both"]),
    }[case]
    extra = ["--timeout", "5"] if command == "listen" else ["--port", str(free_port())]
    r = subprocess.run([*CLI, command, endpoint, *flags, *extra], capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("facestream: error:") and all(w in lines[0] for w in words), lines[0]


def test_publisher_refuses_encryption_without_authentication(endpoint, keys, tmp_path):
    with pytest.raises(PublishError, match="clients folder"):
        Publisher(endpoint, curve_secret=str(keys.server_secret))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(curve.CurveError, match="holds no public key file"):
        Publisher(endpoint, curve_secret=str(keys.server_secret), curve_clients=str(empty))


# -- monitors ---------------------------------------------------------------------------------

def _events(port: int):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/events", timeout=10)


def _page_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _updates(response):
    while line := response.readline():
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


def test_run_monitor_behind_curve_still_shows_frames(endpoint, keys):
    port = free_port()
    proc = _run(endpoint, "--config", str(keys.config), "--monitor-port", str(port))
    try:
        until(lambda: _page_up(port) or proc.poll() is not None, 120, "the monitor page of `run --monitor`")
        assert proc.poll() is None, proc.communicate()[1]
        samples, meta = 0, None
        with _events(port) as events:
            deadline = time.monotonic() + 90
            for update in _updates(events):
                cam = update["cameras"].get("cam0", {})
                samples += len(cam.get("samples", []))
                meta = cam.get("meta", meta)
                if (samples >= 5 and meta is not None) or time.monotonic() > deadline:
                    break
    finally:
        _finish(proc)
    assert samples >= 5 and meta["camera"]["name"] == "cam0"


def test_monitor_command_with_keys_follows_a_curve_publisher(endpoint, keys):
    port = free_port()
    pub = Publisher(endpoint, curve_secret=str(keys.server_secret), curve_clients=str(keys.clients))
    proc = subprocess.Popen([*CLI, "monitor", endpoint, "--port", str(port), "--curve-server", str(keys.server_public),
                             "--curve-key", str(keys.client_secret)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: _page_up(port) or proc.poll() is not None, 60, "the monitor page")
        assert proc.poll() is None, proc.communicate()[1]
        until(lambda: pub.subscribers(protocol.TOPIC_META) == 1, what="the monitor's authenticated subscription")
        shown = None
        with _events(port) as events:
            deadline = time.monotonic() + 30
            for update in _updates(events):
                pub.publish_meta({"status": "running", "camera": {"name": "cam0"}})
                shown = update["cameras"].get("cam0", {}).get("meta", shown)
                if shown is not None or time.monotonic() > deadline:
                    break
    finally:
        _finish(proc)
        pub.close()
    assert shown["status"] == "running"


@pytest.mark.parametrize("host, encrypted, warned", [("0.0.0.0", False, True), ("0.0.0.0", True, False),
                                                     ("127.0.0.1", False, False)])
def test_publishing_on_the_network_unencrypted_is_warned_about(keys, host, encrypted, warned):
    endpoint = f"tcp://{host}:{free_port()}"
    proc = _run(endpoint, "--frames", "3", *(["--config", str(keys.config)] if encrypted else []))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("facestream: warning:")]
    assert warnings == ([f"facestream: warning: {endpoint} publishes on the network unencrypted: anyone who can reach "
                         "this machine can read the stream ([stream] curve_secret and curve_clients encrypt it and name "
                         "who may)"] if warned else []), err
