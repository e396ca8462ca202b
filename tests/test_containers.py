"""Apptainer and conda: the definition files lint clean, pins agree, and Snakemake builds the right `apptainer exec`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "bin"
SECTIONS = {"%post", "%environment", "%files", "%runscript", "%test", "%labels", "%help", "%setup", "%startscript", "%arguments"}
DEFS = sorted((ROOT / "containers").glob("*.def"))


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


@pytest.mark.parametrize("definition", DEFS, ids=lambda p: p.name)
def test_definition_file_lints_clean(definition):
    text = definition.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)\s*$", text.split("\n%", 1)[0], flags=re.M))
    assert header.get("Bootstrap") == "docker" and ":" in header.get("From", ""), "header needs Bootstrap: docker and a tagged From"
    assert not header["From"].endswith(":latest")
    sections = re.findall(r"^(%\w+)", text, flags=re.M)
    assert set(sections) <= SECTIONS and len(sections) == len(set(sections)), sections
    assert {"%post", "%environment", "%test"} <= set(sections)
    body = text.split("%files", 1)[1].split("\n%", 1)[0]
    for source in (line.split()[0] for line in body.splitlines() if line.strip() and not line.strip().startswith("#")):
        assert (ROOT / source).exists(), f"%files copies {source}, which is not in the repository"
    for line in re.findall(r"pip install[^\n]*", text):
        assert "-r /opt/armor/requirements.lock" in line or re.search(r"==|--no-deps /opt/armor", line), f"unpinned: {line}"


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
    assert counts == {"assemble": "45", "calibrate": "9", "prune_chain": "18", "prune_part": "242"}, result.stdout
