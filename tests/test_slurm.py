"""The tiny-model DAG through a real single-node SLURM on localhost: two prune parts of one run at the same time,
one of which hits its time limit, is resubmitted alone and resumes.

tests/slurm/start_slurm.sh installs Debian's slurmctld, slurmd and munge and starts them (root only). Without root
the test is skipped, unless ARMOR_REQUIRE_SLURM=1 (set by .ci/run) turns that into a failure.
"""

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from armor.pipeline.faults import DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]
BLOCK_DELAY_S = 38  # against a first-attempt limit of 2 minutes, which SLURM enforces up to half a minute late: part 0 (4 blocks)
# needs 152 s and its start, part 1 (1 block) 38 s and its start (two Snakemake start-ups and a block: 15 s on a fast 2-core
# machine, 30-60 s on a slow or busy one), so part 0 always times out and part 1 finishes if its start takes under 82 s


@pytest.fixture(scope="module")
def slurm() -> None:
    """A running local SLURM, started by tests/slurm/start_slurm.sh."""
    required = os.environ.get("ARMOR_REQUIRE_SLURM") == "1"
    if os.geteuid() != 0 and not required:
        pytest.skip("a local SLURM needs root to install and start (set ARMOR_REQUIRE_SLURM=1 to require it)")
    result = subprocess.run(["bash", str(ROOT / "tests/slurm/start_slurm.sh")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        (pytest.fail if required else pytest.skip)(f"could not start a local SLURM: {result.stderr[-2000:]}")


def _rules() -> list[str]:
    """The workflow's rule names."""
    return sorted(set(re.findall(r"^rule (\w+):", "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk")), re.M)))


def _local_profile(out: Path) -> Path:
    """profiles/slurm adapted to the test node: one CPU per job, untyped GPUs, squeue for status (no accounting
    database), logs kept, and an hour for every rule but prune_part, whose short limit the test is about."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"] |= {"cpus_per_task": 1, "mem_mb": 2000}
    for rule in _rules():
        if rule != "prune_part":  # a busy node may take more than the scaled minute for e.g. the calibration pass
            profile["set-resources"].setdefault(rule, {})["runtime"] = 60
    for resources in profile["set-resources"].values():
        resources["cpus_per_task"] = 1
        resources.pop("gpu_model", None)  # the test node's GPUs carry no model name
    profile |= {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 5,
                "slurm-keep-successful-logs": True, "latency-wait": 10}
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(profile))
    return out


def _config(out: Path) -> Path:
    """The tiny config with 5 blocks, dense and NoWag-P (independent: 4 + 1 blocks per prune job), and a prune job's
    first attempt limited to 2 minutes."""
    config = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    config |= {"methods": ["dense", "nowag_p"], "runtime_scale": 1 / 720, "prune": {"blocks_per_job": 4}}
    config["models"]["tiny-llama"]["config"]["num_hidden_layers"] = 5
    config.pop("downstream")
    out.write_text(yaml.safe_dump(config))
    return out


def _running_parts(stop: threading.Event, seen: list[int]) -> None:
    """Poll squeue until stopped, recording how many prune_part jobs run at each poll."""
    while not stop.is_set():
        states = subprocess.run(["squeue", "-h", "-o", "%T|%k"], capture_output=True, text=True).stdout.splitlines()
        seen.append(sum(1 for line in states if line.startswith("RUNNING|rule_prune_part")))
        time.sleep(1)


def test_tiny_dag_through_slurm_resumes_a_timed_out_prune_job(slurm, tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--profile",
           str(_local_profile(tmp_path / "profile")), "results/tables/main.csv", "--configfile", str(_config(tmp_path / "config.yaml"))]
    env = {**os.environ, DELAY_ENV: str(BLOCK_DELAY_S), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    stop, running = threading.Event(), []
    poller = threading.Thread(target=_running_parts, args=(stop, running))
    poller.start()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    finally:
        stop.set()
        poller.join()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    table = pd.read_csv(work / "results/tables/main.csv")
    assert table["method"].tolist() == ["dense", "nowag_p"] and (table["ppl_news"] > 1).all()
    assert max(running) == 2, running  # both parts of the NoWag-P run were RUNNING at once
    logs = work / ".snakemake/slurm_logs/rule_prune_part"  # one folder per job: model_method_blocksize_seed_part
    attempts = {part: sorted((logs / f"tiny-llama_nowag_p_0_0_{part}").glob("*.log"), key=lambda p: int(p.stem)) for part in (0, 1)}
    assert len(attempts[1]) == 1, attempts  # the short part finished in its first attempt ...
    assert len(attempts[0]) == 2, attempts  # ... and only the long one was resubmitted
    first, second = (p.read_text() for p in attempts[0])
    assert "DUE TO TIME LIMIT" in first and re.search(r"runtime=2\b", first)
    assert re.search(r"runtime=4\b", second) and "--attempt 2" in second  # the retry asks for twice the time
    prune_log = (work / "results/logs/prune/tiny-llama/nowag_p/b0-s0/part0.log").read_text()
    assert "block 0 (1/4 of this part) resumed from checkpoint" in prune_log  # the log is the last attempt's
    assert "Hugging Face hub offline, cache " in prune_log  # SLURM jobs run offline
    assert re.search(r"block 3 \(4/4 of this part\) (pruned|resumed from checkpoint)", prune_log)  # a slow node may time out in the last pause
    assert len(list((work / ".snakemake/slurm_logs/rule_calibrate").rglob("*.log"))) == 1  # nothing else ran again
