import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from armor.config import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]


def _minimal() -> dict:
    return {
        "models": {"m": {"source": "hub", "id": "org/model", "seqlen": 128}},
        "methods": ["dense", "wanda"],
        "calibration": {"source": "c4"},
        "evaluation": {"datasets": {"wikitext2": {"source": "wikitext2"}}},
    }


@pytest.mark.parametrize("path", ["config.yaml", "config/demo.yaml", "tests/data/tiny.yaml"])
def test_shipped_configs_validate(path):
    validate(yaml.safe_load((ROOT / path).read_text()))


def test_defaults_are_filled():
    config = validate(_minimal())
    assert config["calibration"] == {"source": "c4", "nsamples": 128, "seed": 0, "mode": "independent", "batch_size": 8}
    assert config["armor"]["selection"] == "gradient_random"
    assert config["models"]["m"]["dtype"] == "float32"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["calibration"].update(mode="greedy"), "config key 'calibration.mode': 'greedy' is not allowed; allowed values: independent, sequential"),
        (lambda c: c["calibration"].update(nsample=4), "config key 'calibration': unknown key(s) nsample; allowed keys: source, nsamples"),
        (lambda c: c["methods"].append("obc"), "config key 'methods.2': 'obc' is not allowed; allowed values: dense, magnitude"),
        (lambda c: c["models"]["m"].pop("id"), "config key 'models.m': 'id' is a required property"),
        (lambda c: c["models"]["m"].update(seqlen="long"), "config key 'models.m.seqlen': 'long' is not of type 'integer'"),
        (lambda c: c.update(devices="cpu"), "config key '<top level>': unknown key(s) devices"),
        (lambda c: c.update(downstream={"tasks": {"t": {"local": "trivia", "metric": "acc"}}}),
         "config key 'downstream.tasks.t.local': 'trivia' is not allowed; allowed values: analogy, wiki_cloze, news_cloze"),
        (lambda c: c.update(downstream={"tasks": {"t": {"local": "analogy", "task": "arc_easy", "metric": "acc"}}}),
         "config key 'downstream.tasks.t': set exactly one of task, local"),
        (lambda c: c["evaluation"].update(snapshot_dataset="c5"),
         "evaluation.snapshot_dataset: 'c5' is not one of the evaluation datasets ['wikitext2']"),
    ],
)
def test_bad_config_names_key_and_allowed(edit, message):
    config = _minimal()
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert message in str(err.value)


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    bad = _minimal()
    bad["calibration"]["mode"] = "greedy"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", "bad.yaml", "-n"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "config key 'calibration.mode'" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_paper_dag_builds_offline():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/tables/main.csv", "-n", "--quiet", "rules"],
        capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines() if line.split()[:1] and line.split()[-1].isdigit() and len(line.split()) == 2)
    models, runs_per_model = 9, 5  # dense, wanda, sparsegpt, nowag_p, armor@128
    assert counts["fetch_model"] == str(models)
    assert counts["prune"] == str(models * runs_per_model)
    assert counts["perplexity"] == str(models * runs_per_model)
    assert counts["evaluation_data"] == str(models * 2)


def test_slurm_profile_builds_paper_dag_with_gpu_requests():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"],
        capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = result.stdout.split("\n\n")
    prune = next(j for j in jobs if "rule prune:" in j)
    fetch = next(j for j in jobs if "rule fetch_model:" in j)
    lm_eval = next(j for j in jobs if "rule lm_eval:" in j)
    assert "gpu=1" in prune and "gpu_model=a100" in prune and "slurm_partition=gpu" in prune and "runtime=1440" in prune
    assert "gpu=1" in lm_eval and "cpus_per_task=8" in lm_eval
    assert "gpu=" not in fetch and "slurm_partition=cpu" in fetch
