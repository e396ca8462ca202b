"""CPU tuning: a process that called tune_cpu flushes denormal floats to zero."""

import subprocess
import sys

PROBE = """
import torch
from armor.pipeline.cpu import tune_cpu
torch.set_num_threads(1)
tiny = torch.tensor([1e-39])  # a denormal float32
before = float(tiny * 1.0)
tune_cpu()
print(before > 0, float(tiny * 1.0) == 0)
"""


def test_tune_cpu_flushes_denormals_to_zero():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
