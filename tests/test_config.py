import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from armor.config import ConfigError, validate
from armor.evaluation.task_index import check_tasks
from armor.methods.variants import configured

ROOT = Path(__file__).resolve().parents[1]


def _minimal() -> dict:
    """The smallest valid configuration: one hub model, dense only."""
    return {
        "models": {"m": {"source": "hub", "id": "org/model", "num_layers": 4, "seqlen": 128}},
        "methods": ["dense", "wanda"],
        "calibration": {"source": "c4"},
        "evaluation": {"datasets": {"wikitext2": {"source": "wikitext2"}}},
    }


@pytest.mark.parametrize("path", ["config.yaml", "config/demo.yaml", "tests/data/tiny.yaml"])
def test_shipped_configs_validate(path):
    validate(yaml.safe_load((ROOT / path).read_text()))


def test_defaults_are_filled():
    config = validate(_minimal())
    assert config["calibration"] == {"source": "c4", "nsamples": 128, "seeds": [0], "mode": {}, "batch_size": 8}
    assert config["armor"]["selection"] == "gradient_random" and config["armor"]["solver"] == "adam" and config["armor"]["guard"] is False
    assert config["models"]["m"]["dtype"] == "float32" and config["models"]["m"]["gpus"] == 1
    assert config["prune"] == {"blocks_per_job": 4}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["calibration"].update(mode={"wanda": "greedy"}), "config key 'calibration.mode.wanda': 'greedy' is not allowed; allowed values: independent, sequential"),
        (lambda c: c["calibration"].update(mode="independent"), "config key 'calibration.mode': 'independent' is not of type 'object' (calibration mode per method"),
        (lambda c: c["calibration"].update(mode={"dense": "sequential"}), "config key 'calibration.mode': 'dense' is not allowed; allowed values: magnitude, wanda"),
        (lambda c: c["models"]["m"].pop("num_layers"), "config key 'models.m': 'num_layers' is a required property"),
        (lambda c: c["models"]["m"].update(source="local"), "config key 'models.m': 'path' is a required property"),
        (lambda c: c["armor"].update(solver="lbfgs") if "armor" in c else c.update(armor={"solver": "lbfgs"}), "config key 'armor.solver': 'lbfgs' is not allowed; allowed values: adam, exact"),
        (lambda c: c["calibration"].update(nsample=4), "config key 'calibration': unknown key(s) nsample; allowed keys: source, nsamples"),
        (lambda c: c["methods"].append("obc"), "config key 'methods.2': 'obc' is not allowed; allowed values: dense, magnitude"),
        (lambda c: c["models"]["m"].pop("id"), "config key 'models.m': 'id' is a required property"),
        (lambda c: c["models"]["m"].update(seqlen="long"), "config key 'models.m.seqlen': 'long' is not of type 'integer'"),
        (lambda c: c["models"]["m"].update(seqlen=2.0e3), "config key 'models.m.seqlen': 2000.0 is not of type 'integer'"),
        (lambda c: c.update(devices="cpu"), "config key '<top level>': unknown key(s) devices"),
        (lambda c: c.update(downstream={"tasks": {"t": {"local": "trivia", "metric": "acc"}}}),
         "config key 'downstream.tasks.t.local': 'trivia' is not allowed; allowed values: analogy, wiki_cloze, news_cloze"),
        (lambda c: c.update(downstream={"tasks": {"t": {"local": "analogy", "task": "arc_easy", "metric": "acc"}}}),
         "config key 'downstream.tasks.t': set exactly one of task, local"),
        (lambda c: c["calibration"].update(seed=1), "config key 'calibration': unknown key(s) seed; allowed keys: source, nsamples, seeds"),
        (lambda c: c["calibration"].update(seeds=[0, 0]), "config key 'calibration.seeds': [0, 0] has non-unique elements"),
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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["calibration"].update(mode={"wanda": "greedy"}), "config key 'calibration.mode.wanda'"),
        pytest.param(lambda c: c["models"].update(m={"source": "local", "path": "/nonexistent/llama", "seqlen": 128}),
                     "models.m.path: /nonexistent/llama is not a Hugging Face model folder (no config.json)", marks=pytest.mark.slow),
    ],
)
def test_bad_config_stops_snakemake_before_any_job(tmp_path, edit, message):
    bad = _minimal()
    edit(bad)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", "bad.yaml", "-n"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def _paper_config(edit) -> dict:
    """config.yaml with one edit."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    edit(config)
    return config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["downstream"]["tasks"]["hellaswag"].update(task="hellaswagg"),
         "downstream.tasks.hellaswag.task: 'hellaswagg' is not a task or group of lm-eval 0.4.13; nearest: hellaswag"),
        (lambda c: c["downstream"]["tasks"]["arc_challenge"].update(metric="acc_nrom"),
         "downstream.tasks.arc_challenge.metric: 'acc_nrom' is not a metric of arc_challenge in lm-eval 0.4.13, which reports acc, acc_norm; nearest: acc_norm"),
    ],
    ids=["task", "metric"],
)
def test_dry_run_of_the_paper_config_refuses_a_misspelt_lm_eval_name(tmp_path, edit, message):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_paper_config(edit)))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
                             "--configfile", str(tmp_path / "config.yaml")], capture_output=True, text=True)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["downstream"]["tasks"]["gsm8k"].update(metric="exact_match"),
         "'exact_match' is not a metric of gsm8k in lm-eval 0.4.13, which reports exact_match,strict-match, exact_match,flexible-extract"),
        (lambda c: c["downstream"]["tasks"]["arc_challenge"].update(task="arc_challenge_flan"),
         "downstream.tasks.arc_challenge.task: group 'arc_challenge_flan' of lm-eval 0.4.13 aggregates no metric"),
        (lambda c: c["downstream"]["tasks"]["arc_challenge"].update(task="ai2_arc"),
         "downstream.tasks.arc_challenge.task: 'ai2_arc' is a tag of lm-eval 0.4.13, which reports no score of its own"),
        (lambda c: c["calibration"].update(source="c5"),
         "config key 'calibration.source': 'c5' is not allowed; allowed values: gensim_wiki, gensim_news, wikitext2, c4, slimpajama; nearest: c4"),
        (lambda c: c["evaluation"]["datasets"]["wikitext2"].update(source="wikitext"),
         "config key 'evaluation.datasets.wikitext2.source': 'wikitext' is not allowed; allowed values: gensim_wiki, gensim_news, wikitext2, c4, slimpajama; nearest: wikitext2"),
        (lambda c: c["models"]["llama2-7b"].update(id="Llama-2-7b-hf"),
         "config key 'models.llama2-7b.id': 'Llama-2-7b-hf' is not a hub repository id: namespace/name"),
    ],
    ids=["metric-filter", "group-without-score", "tag", "calibration-source", "evaluation-source", "model-id"],
)
def test_paper_config_with_a_wrong_name_is_refused_naming_it(edit, message):
    with pytest.raises(ConfigError) as err:
        check_tasks(validate(_paper_config(edit))["downstream"]["tasks"])
    assert message in str(err.value)


def test_paper_dag_builds_offline():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/tables/main.csv", "-n", "--quiet", "rules"],
        capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines() if line.split()[:1] and line.split()[-1].isdigit() and len(line.split()) == 2)
    blocks = {"llama2-7b": 32, "llama2-13b": 40, "llama2-70b": 80, "llama3-8b": 32, "llama3-70b": 80, "qwen2.5-7b": 28,
              "qwen2.5-14b": 48, "qwen2.5-32b": 64, "qwen2.5-72b": 80}
    models, runs_per_model = len(blocks), 6  # dense, wanda, sparsegpt, nowag_p, the paper's armor@128 and ours beside it
    assert counts["fetch_model"] == counts["calibrate"] == str(models)
    assert counts["prune_chain"] == str(models * 3)  # wanda, sparsegpt and ours (XᵀX/n in its chain) calibrate sequentially
    assert counts["prune_part"] == str(sum(2 * -(-n // 4) for n in blocks.values()))  # nowag_p and armor, 4 blocks per job
    assert counts["assemble"] == counts["perplexity"] == str(models * runs_per_model)
    assert counts["evaluation_data"] == str(models * 2)


def test_slurm_profile_builds_paper_dag_with_gpu_requests():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"],
        capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = result.stdout.split("\n\n")
    parts = [j for j in jobs if "rule prune_part:" in j and "model=llama2-70b, method=armor," in j]
    assert len(parts) == 20
    per_block_gb = 69 / 80
    for part in parts:
        assert "gpu=1," in part and "gpu_model=a100" in part and "slurm_partition=gpu" in part and "runtime=1440" in part
        mem_mb = int(re.search(r"mem_mb=(\d+)", part).group(1))
        assert mem_mb == 1024 * math.ceil(2 + 24 * per_block_gb * 1e9 / 2**30) < 24 * 1024  # one block's share, not 140 GB
    for rule, gpus in (("lm_eval", 4), ("perplexity", 1), ("snapshot_perplexity", 1)):  # perplexity streams blocks
        job = next(j for j in jobs if f"rule {rule}:" in j and "model=llama2-70b," in j)
        assert f"gpu={gpus}," in job and "slurm_partition=gpu" in job, rule
    assert "gpu=1," in next(j for j in jobs if "rule lm_eval:" in j and "model=llama2-7b," in j)
    fetch = next(j for j in jobs if "rule fetch_model:" in j)
    assert "gpu=" not in fetch and "slurm_partition=cpu" in fetch


def test_longest_jobs_have_the_highest_priority():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", "-n", "-F"],
        capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    paper, ours = config["armor"], config["variants"]["armor_gn"]["settings"]
    priority = {}
    for job in result.stdout.split("\n\n"):
        rule = re.search(r"rule (\w+):", job)
        if rule:
            name = rule[1] + "".join(f" {k}={v}" for k, v in re.findall(r"(method|block_size|part)=(\w+)", job))
            found = re.search(r"priority: (\d+)", job)
            priority[name] = int(found[1]) if found else 0
    for b, iterations in ((16, ours["iterations"]), (64, ours["iterations_by_block_size"][64])):
        assert priority[f"prune_part method=armor_gn block_size={b} part=0"] == iterations * 12 * 15  # 15 blocks per job, a step 12 Adam ones
    assert priority["prune_part method=armor block_size=16 part=0"] == paper["iterations"] * 15
    assert priority["prune_part method=armor_gn block_size=16 part=0"] > priority["prune_part method=armor block_size=16 part=0"]
    assert priority["calibrate"] == 1
    assert priority["prune_part method=nowag_p block_size=0 part=0"] == priority["prune_chain method=sparsegpt block_size=0"] == 0
    assert max(p for name, p in priority.items() if not name.startswith(("prune", "calibrate"))) == 0


def test_variants_run_a_method_with_their_own_settings_and_label():
    config = validate(_minimal() | {"methods": ["dense", "sparsegpt", "armor", "armor_gn", "sparsegpt_damped"], "armor": {"iterations": 100},
                                    "variants": {"armor_gn": {"method": "armor", "settings": {"solver": "gauss_newton", "block_sizes": [16]}},
                                                 "sparsegpt_damped": {"method": "sparsegpt", "label": "SparseGPT, 10 % damping", "settings": {"percdamp": 0.1}}}})
    variants = configured(config)
    assert [(v.method, v.label, v.origin) for v in variants.values()] == [
        ("dense", "Dense", "paper"), ("sparsegpt", "SparseGPT", "paper"), ("armor", "ARMOR", "paper"),
        ("armor", "ARMOR, Gauss–Newton (ours)", "ours"), ("sparsegpt", "SparseGPT, 10 % damping (ours)", "ours")]
    gn = variants["armor_gn"]
    assert gn.settings["iterations"] == 100 and gn.settings["solver"] == "gauss_newton"  # the method's section, then its own
    assert gn.block_sizes([16, 64]) == [16] and variants["armor"].block_sizes([16, 64]) == [16, 64] and variants["sparsegpt"].block_sizes([16]) == [0]
    assert variants["sparsegpt_damped"].settings == {"percdamp": 0.1, "blocksize": 128}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["methods"].append("armor_gnn"), "config key 'methods.2': 'armor_gnn' is not allowed; allowed values: dense, magnitude, wanda, sparsegpt, nowag_p, armor, armor_gn; nearest: armor_gn"),
        (lambda c: c["variants"]["armor_gn"]["settings"].update(lr="fast"), "variants.armor_gn.settings: option 'lr': 'fast' is not of type 'number'"),
        (lambda c: c["variants"].update(mag={"method": "magnitude", "settings": {"x": 1}}), "config key 'variants.mag.settings': magnitude takes no settings"),
        (lambda c: c["variants"].update(armor={"method": "armor"}), "config key 'variants'"),
        (lambda c: c["calibration"].update(mode={"armor_gm": "sequential"}), "config key 'calibration.mode': 'armor_gm' is not allowed; allowed values: magnitude, wanda, sparsegpt, nowag_p, armor, armor_gn"),
    ],
    ids=["unknown-name", "bad-setting", "settings-of-a-method-without", "a-methods-own-name", "mode-key"],
)
def test_bad_variant_names_the_key(edit, message):
    config = _minimal() | {"variants": {"armor_gn": {"method": "armor", "settings": {"solver": "gauss_newton"}}}}
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert message in str(err.value)


def test_a_variant_may_set_its_own_calibration_mode():
    config = validate(_minimal() | {"methods": ["wanda", "wanda_indep"], "variants": {"wanda_indep": {"method": "wanda"}},
                                    "calibration": {"source": "c4", "mode": {"wanda_indep": "independent"}}})
    assert configured(config)["wanda_indep"].origin == "ours"
