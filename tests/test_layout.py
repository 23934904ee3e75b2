"""The live path stands alone: importing it loads no training, simulator or tool module."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("facestream.engines.training", "facestream.camera_adapters.synthetic", "facestream.streamer.tools")
FOLDERS = {"streamer": "facestream.streamer", "engines": "facestream.engines", "camera_adapters": "facestream.camera_adapters"}


def live_modules() -> list[str]:
    """Every module of the three folders outside the offline subpackages (the CLI included: it
    imports its tools only when a tool command runs)."""
    found = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__").removesuffix(".__main__")
            if not name.startswith(OFFLINE) and name not in found and path.name != "__main__.py":
                found.append(name)
    return found


def offline_imports(modules: list[str]) -> list[str]:
    """The offline modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({OFFLINE!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_live_path_imports_no_training_simulator_or_tool_module():
    modules = live_modules()
    assert {"facestream.streamer.pipeline", "facestream.engines.tracker", "facestream.camera_adapters.registry",
            "facestream.streamer.cli"} <= set(modules)
    assert offline_imports(modules) == []


def test_the_check_sees_an_offline_module_pulled_in():
    assert "facestream.camera_adapters.synthetic.camera" in offline_imports(["facestream.engines.training.datasets"])
