"""Settings: defaults documented, files and flags merged, bad keys and values refused in one line."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facestream.streamer.config import ConfigError, default_config_path, defaults, load_config

REPO = Path(__file__).resolve().parents[1]


def test_every_default_setting_is_documented_by_a_comment():
    lines = default_config_path().read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            above = lines[i - 1].strip()
            assert above.startswith("#") or re.match(r"^[a-z_]+ = ", above), f"undocumented setting: {line}"


def test_packaged_defaults_are_the_repository_file():
    assert default_config_path().read_text() == (REPO / "configs" / "default.toml").read_text()


@pytest.mark.parametrize("example", sorted((REPO / "configs").glob("*.toml")))
def test_example_files_load(example):
    cfg = load_config(example)
    assert cfg.as_dict().keys() == defaults().as_dict().keys()


def test_file_then_flags_override_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[camera]\nfps = 100\n[stream]\npolicy = "every"\n')
    cfg = load_config(f, {"stream": {"policy": "latest"}, "run": {"frames": 7}})
    assert cfg.camera.fps == 100.0 and isinstance(cfg.camera.fps, float)
    assert cfg.stream.policy == "latest"
    assert cfg.run.frames == 7
    assert cfg.camera.width == defaults().camera.width


@pytest.mark.parametrize(
    "text, words",
    [
        ("[camera]\nfsp = 3\n", ["unknown key", "[camera] fsp"]),
        ("[cameras]\nfps = 3\n", ["unknown section", "[cameras]"]),
        ('[camera]\nfps = "fast"\n', ["[camera] fps", "must be a number"]),
        ("[camera]\nwidth = 1.5\n", ["[camera] width", "must be an integer"]),
        ("[camera]\nrealtime = 1\n", ["[camera] realtime", "true/false"]),
        ("[camera]\nfps = -1\n", ["[camera] fps", "not valid"]),
        ('[stream]\npolicy = "sometimes"\n', ["[stream] policy", "not valid"]),
        ('[stream]\npublish = "localhost:5555"\n', ["[stream] publish", "tcp://HOST:PORT"]),
        ('[stream]\npublish = "tcp://127.0.0.1:99999"\n', ["[stream] publish", "port 99999", "1..65535"]),
        ('[stream]\npublish = "tcp://127.0.0.1:0"\n', ["[stream] publish", "port 0"]),
        ('[stream]\npublish = "tcp://127.0.0.300:5555"\n', ["[stream] publish", "127.0.0.300 is not an IPv4 address"]),
        ('[stream]\npublish = "tcp://[::zz]:5555"\n', ["[stream] publish", "not an IPv6 address"]),
        ('[stream]\npublish = "inproc://stream"\n', ["[stream] publish", "tcp:// or ipc://"]),
        ('[stream]\npublish = "ipc:///tmp/' + "x" * 120 + '"\n', ["[stream] publish", "at most 107"]),
        ("[tracker]\nbbox = [10, 5, 0, 100]\n", ["[tracker] bbox", "row1 < row2"]),
        ("[tracker]\nbbox = [0, 5, 0]\n", ["[tracker] bbox"]),
        ("[camera\nfps = 3\n", ["not valid TOML"]),
    ],
)
def test_bad_settings_are_refused_naming_them(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message
    assert str(f) in message


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/facestream.toml")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--config", "/nonexistent.toml"], ["config file not found"]),
        (["--policy", "sometimes"], ["[stream] policy"]),
        (["--bbox", "1,2,x,4"], ["--bbox", "four integers"]),
        (["--fps", "-5"], ["[camera] fps"]),
        (["--publish", "tcp://127.0.0.1:99999"], ["[stream] publish", "port 99999"]),
    ],
)
def test_cli_config_errors_are_one_line_and_exit_2(args, words):
    r = subprocess.run([sys.executable, "-m", "facestream.streamer.cli", "run", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error:"), r.stderr
    for w in words:
        assert w in lines[0]


def test_a_binary_config_file_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "settings.toml"
    f.write_bytes(bytes(range(256)))
    r = subprocess.run([sys.executable, "-m", "facestream.streamer.cli", "run", "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"facestream: error: config file {f} is not valid TOML: not UTF-8 text (byte 128)"), r.stderr


@pytest.mark.parametrize("command", ["listen", "monitor"])
def test_a_subscriber_endpoint_out_of_range_is_one_line(command):
    """ZeroMQ would connect to port 99999 - 65536 = 34463; facestream refuses it."""
    r = subprocess.run([sys.executable, "-m", "facestream.streamer.cli", command, "tcp://127.0.0.1:99999"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == (
        "facestream: error: tcp://127.0.0.1:99999: not a valid endpoint: port 99999 is not a port number (1..65535) "
        "(expected tcp://HOST:PORT (port 1..65535) or ipc://PATH)"), r.stderr


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://*:1", "tcp://0.0.0.0:65535", "tcp://[::1]:5555",
                                      "tcp://eth0:5555", "tcp://rig-pc.lab.example:5555", "ipc:///tmp/facestream/stream",
                                      "ipc://@abstract"])
def test_good_endpoints_are_accepted(endpoint):
    cfg = load_config(None, {"stream": {"publish": endpoint}})
    assert cfg.stream.publish == endpoint
