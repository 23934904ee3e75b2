"""The GPU check script: where no CUDA GPU is visible it says in one line that it was not run."""
import subprocess
import sys

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run the script itself (minutes)")
def test_without_a_gpu_it_says_it_was_not_run(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "facestream.streamer.tools.gpu_check", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "not run" in done.stderr
    assert not out.exists()
