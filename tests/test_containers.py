"""Containers and conda: the image recipe and definition file, pins that agree, the `apptainer exec` Snakemake builds, and
the tiny DAG run inside the image of `make image`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "bin"
SECTIONS = {"%post", "%environment", "%files", "%runscript", "%test", "%labels", "%help", "%setup", "%startscript", "%arguments"}


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` requirement lines (names normalised as pip does)."""
    pins = {}
    for line in lines:
        if m := re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*", line):
            pins[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return pins


def _pyproject_pins() -> dict[str, str]:
    """Package name -> pinned version of pyproject's dependencies."""
    return _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def test_definition_file_wraps_the_archive_the_build_script_writes():
    text = (ROOT / "containers" / "armor.def").read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)\s*$", text.split("\n%", 1)[0], flags=re.M))
    assert header == {"Bootstrap": "docker-archive", "From": "containers/armor-cuda.tar"}
    sections = re.findall(r"^(%\w+)", text, flags=re.M)
    assert set(sections) <= SECTIONS and len(sections) == len(set(sections)) and {"%environment", "%test"} <= set(sections)
    assert 'containers/armor-$variant.tar' in (ROOT / "containers" / "build.sh").read_text()


def test_containerfile_pins_every_install_and_its_variants_differ_only_in_torch():
    text = (ROOT / "containers" / "Containerfile").read_text()
    for line in re.findall(r"pip install[^\n]*", text):
        assert re.search(r"-r /opt/armor/requirements.lock|==|--no-deps /opt/armor|\"\$TORCH_PIN\"", line), f"unpinned: {line}"
    variants = dict(re.findall(r"^\s+(cpu|cuda)\) (.*?) ;;", (ROOT / "containers" / "build.sh").read_text(), flags=re.M))
    assert variants == {"cpu": 'torch_pin="torch==2.13.0+cpu"; torch_index="https://download.pytorch.org/whl/cpu"',
                        "cuda": 'torch_pin="torch==2.13.0"; torch_index=""'}
    assert _pins([variants["cuda"].split('"')[1]]) == {"torch": _pins((ROOT / "requirements.lock").read_text().splitlines())["torch"]}


def test_lock_conda_env_and_pyproject_pin_the_same_versions():
    wanted = _pyproject_pins()
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    env = yaml.safe_load((ROOT / "envs" / "armor.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == wanted
    assert {name: lock.get(name) for name in wanted} == wanted


def test_apptainer_exec_uses_the_image_from_the_workflow_folder_and_passes_nv(tmp_path):
    """A real job through `--sdm apptainer`; the stand-in records the call and runs the command on the host."""
    calls = tmp_path / "apptainer_calls.log"
    env = {**os.environ, "PATH": f"{STANDIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "APPTAINER_STANDIN_LOG": str(calls)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path / "work"), "--cores", "1",
           "--sdm", "apptainer", "--apptainer-args=--nv", "results/data/lm_tasks", "--configfile", str(ROOT / "tests/data/tiny.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    execs = [line for line in calls.read_text().splitlines() if line.startswith("apptainer exec")]
    assert len(execs) == 1
    assert f"--home {tmp_path / 'work'} --nv " in execs[0]
    assert f" {ROOT}/containers/armor.sif bash -c " in execs[0] and "lm_tasks.py" in execs[0]
    assert (tmp_path / "work/results/data/lm_tasks/analogy.jsonl").exists()


def test_slurm_profile_dry_run_with_apptainer(tmp_path):
    env = {**os.environ, "PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "APPTAINER_STANDIN_LOG": str(tmp_path / "calls.log")}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "--quiet", "rules", "--sdm", "apptainer",
           "--apptainer-args=--nv"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    counts = dict(re.findall(r"^(assemble|calibrate|prune_chain|prune_part)\s+(\d+)$", result.stdout, flags=re.M))
    assert counts == {"assemble": "54", "calibrate": "9", "prune_chain": "27", "prune_part": "242"}, result.stdout  # wanda, sparsegpt, ours: chains


PODMAN_IMAGE = os.environ.get("ARMOR_PODMAN_IMAGE", "localhost/armor:cpu")
REQUIRE_IMAGE = "ARMOR_REQUIRE_IMAGE"  # set by `make test-containers`: a missing image fails instead of skipping
TABLES = {"main": ["prune_seconds"], "downstream": [], "blocksize": [], "iterations": []}  # table -> its timing columns


def _image_id() -> str | None:
    """The ID of the image `make image` builds, or None without podman or that image."""
    if shutil.which("podman") is None:
        return None
    done = subprocess.run(["podman", "--runtime", "runc", "image", "inspect", "--format", "{{.Id}}", PODMAN_IMAGE], capture_output=True, text=True)
    return f"sha256:{done.stdout.strip()}" if done.returncode == 0 else None


def _tiny_dag(workdir: Path, *args: str, env: dict | None = None) -> None:
    """The tiny workflow's tables, from fetching the model on, run by the real Snakemake in workdir."""
    targets = [f"results/tables/{t}.csv" for t in TABLES] + ["results/tables/main.md"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *targets, *args,
           "--configfile", str(ROOT / "tests/data/tiny.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_every_rule_of_the_tiny_dag_runs_inside_the_image_and_tabulates_as_on_the_host(tmp_path):
    image_id = _image_id()
    if image_id is None:
        message = f"needs podman and the image {PODMAN_IMAGE} (make image)"
        pytest.fail(message) if os.environ.get(REQUIRE_IMAGE) else pytest.skip(message)
    calls = tmp_path / "apptainer_calls.log"
    _tiny_dag(tmp_path / "image", "--sdm", "apptainer", env={"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "APPTAINER_STANDIN_LOG": str(calls)})
    _tiny_dag(tmp_path / "host")
    logs = sorted((tmp_path / "image/results/logs").rglob("*.log"))
    assert len(logs) == len([line for line in calls.read_text().splitlines() if line.startswith("apptainer exec")]) > 20
    for log in logs:  # every job's first line names the software it ran in: the image, never the host
        assert f"software: image {image_id}, torch 2.13.0+cpu" in log.read_text(), log
    assert all("software: image host" in log.read_text() for log in (tmp_path / "host/results/logs").rglob("*.log"))
    assert json.loads((tmp_path / "image/results/provenance.json").read_text())["image"] == image_id
    summary = json.loads((tmp_path / "image/results/runs/tiny-llama/armor/b16-s0/summary.json").read_text())
    assert summary["software"] == {"image": image_id, "torch": "2.13.0+cpu", "transformers": summary["software"]["transformers"]}
    for table, timings in TABLES.items():
        image, host = (pd.read_csv(tmp_path / side / f"results/tables/{table}.csv").drop(columns=timings) for side in ("image", "host"))
        pd.testing.assert_frame_equal(image, host, check_exact=True, obj=table)
