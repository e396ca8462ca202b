"""The tiny-model DAG through a real single-node SLURM on localhost, with a prune job that hits its time limit.

tests/slurm/start_slurm.sh installs Debian's slurmctld, slurmd and munge and starts them (root only). Without root
the test is skipped, unless ARMOR_REQUIRE_SLURM=1 (set by .ci/run) turns that into a failure.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from armor.pipeline.blockwise import DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]
BLOCK_DELAY_S = 40  # 3 blocks -> about 2 minutes of pruning against a first-attempt limit of 1 minute


@pytest.fixture(scope="module")
def slurm() -> None:
    """A running local SLURM, started by tests/slurm/start_slurm.sh."""
    required = os.environ.get("ARMOR_REQUIRE_SLURM") == "1"
    if os.geteuid() != 0 and not required:
        pytest.skip("a local SLURM needs root to install and start (set ARMOR_REQUIRE_SLURM=1 to require it)")
    result = subprocess.run(["bash", str(ROOT / "tests/slurm/start_slurm.sh")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        (pytest.fail if required else pytest.skip)(f"could not start a local SLURM: {result.stderr[-2000:]}")


def _local_profile(out: Path) -> Path:
    """profiles/slurm adapted to the test node: one CPU per job, untyped GPUs, squeue for status (no accounting
    database), logs kept."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"] |= {"cpus_per_task": 1, "mem_mb": 2000}
    for resources in profile["set-resources"].values():
        resources["cpus_per_task"] = 1
        resources.pop("gpu_model", None)  # the test node's GPUs carry no model name
    profile |= {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 5,
                "slurm-keep-successful-logs": True, "latency-wait": 10}
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(profile))
    return out


def _config(out: Path) -> Path:
    """The tiny config with dense and Wanda only, and every first attempt limited to 1 minute."""
    config = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    config |= {"methods": ["dense", "wanda"], "runtime_scale": 1 / 1440}
    config.pop("downstream")
    out.write_text(yaml.safe_dump(config))
    return out


def test_tiny_dag_through_slurm_resumes_a_timed_out_prune_job(slurm, tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--profile",
           str(_local_profile(tmp_path / "profile")), "results/tables/main.csv", "--configfile", str(_config(tmp_path / "config.yaml"))]
    env = {**os.environ, DELAY_ENV: str(BLOCK_DELAY_S), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    table = pd.read_csv(work / "results/tables/main.csv")
    assert table["method"].tolist() == ["dense", "wanda"] and (table["ppl_news"] > 1).all()
    logs = {p.parent.name: p for p in (work / ".snakemake/slurm_logs/rule_prune").rglob("*.log")}
    attempts = sorted((p for p in (work / ".snakemake/slurm_logs/rule_prune/tiny-llama_wanda_0").glob("*.log")), key=lambda p: int(p.stem))
    assert len(attempts) == 2, logs
    first, second = (p.read_text() for p in attempts)
    assert "DUE TO TIME LIMIT" in first and re.search(r"runtime=1\b", first)
    assert re.search(r"runtime=2\b", second) and "--attempt 2" in second  # the retry asks for twice the time
    prune_log = (work / "results/logs/prune/tiny-llama/wanda/b0.log").read_text()
    assert "resumed from checkpoint" in prune_log and "block 3/3 pruned" in prune_log
