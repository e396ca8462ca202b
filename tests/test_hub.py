"""The hub path as on a cluster: the real `make prefetch` against a stand-in hub (tests/hub) where the network is, then
the workflow offline on the filled cache, with every outgoing request failing the test."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from armor.config import validate
from armor.evaluation.task_index import load_index
from armor.hub.environment import NETWORK_ENV, OFFLINE, NotInCacheError, job_environment, prefetch_command_for, use_network
from armor.prefetch.fetch import PrefetchError, check_access, prefetch_model, prefetch_text
from armor.pipeline.models import load_tokenizer
from armor.prefetch.plan import repositories, text_parts
from hub.build_repos import MODEL_ID, build
from hub.standin import StandInHub

ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIG = ROOT / "tests" / "data" / "hub.yaml"
TOKEN = "hf_armorTestTokenThatMustNotLeak7Q9z"
TARGETS = ["results/tables/main.md", "results/tables/downstream.csv", "results/runs/tiny-hub/nowag_p/b0-s0/packed"]
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def hub_env(hub: StandInHub, home: Path, token: str | None = TOKEN, offline: bool = False) -> dict[str, str]:
    """The environment of a user of the stand-in hub: its endpoint and cache, a token; offline, every proxy pointed at
    the stand-in hub, so any outgoing request is recorded there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ARMOR_")) and k not in PROXIES and k.lower() != "no_proxy"}
    env |= {"HF_HOME": str(home), "HF_ENDPOINT": hub.url}
    if token:
        env["HF_TOKEN"] = token
    if offline:
        env |= OFFLINE | dict.fromkeys(PROXIES, hub.url)
    return env


def snakemake(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real Snakemake on the hub config in workdir."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args,
           "--configfile", str(HUB_CONFIG)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def make_prefetch(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The README's `make prefetch CONFIG=...` for the hub config, its results in workdir."""
    return subprocess.run(["make", "-C", str(ROOT), "prefetch", f"CONFIG={HUB_CONFIG}", f"WORKDIR={workdir}"],
                          capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    """The stand-in hub serving the repositories of tests/hub/build_repos.py, the model gated behind TOKEN."""
    repos = tmp_path_factory.mktemp("repos")
    build(repos)
    with StandInHub(repos, gated=(MODEL_ID,), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def prefetched(hub: StandInHub, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """`make prefetch` run against the stand-in hub: the workflow folder, the filled cache and what it printed."""
    root = tmp_path_factory.mktemp("hub-path")
    done = make_prefetch(root / "work", hub_env(hub, root / "hf"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return root / "work", root / "hf", done.stdout


@pytest.fixture(scope="module")
def offline_run(prefetched: tuple[Path, Path, str], hub: StandInHub) -> tuple[Path, Path, list[str]]:
    """The workflow to the main and downstream tables, then its report, offline: the workflow folder, the cache and
    the requests the stand-in hub received meanwhile."""
    work, home, _ = prefetched
    before = len(hub.requests)
    env = hub_env(hub, home, offline=True)
    done = snakemake(work, env, *TARGETS)
    assert done.returncode == 0, done.stderr[-6000:]
    report = snakemake(work, env, *TARGETS, "--report", str(work / "results" / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    return work, home, hub.requests[before:]


def test_prefetch_fills_the_cache_and_prints_what_it_holds(prefetched):
    work, home, printed = prefetched
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines() if line.startswith("| ")}
    assert "armor-repro/tiny-llama" in rows["model `tiny-hub`"]
    assert "allenai/c4" in rows["text `c4`"] and "| 2 |" in rows["text `c4`"]  # the train and validation shards
    assert "| 1 |" in rows["text `wikitext2`"]  # evaluation only: the test split
    assert "cais/mmlu" in rows["lm-eval task `mmlu`: mmlu (57 tasks, 57 dataset configs)"]
    assert "openai/gsm8k" in rows["lm-eval task `gsm8k`: gsm8k (1 task, 1 dataset config)"]
    assert re.search(r"\| total \| \| \| \| [\d.]+ MB \|", printed)
    snapshot = next((home / "hub" / "models--armor-repro--tiny-llama" / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").is_file() and not (snapshot / "pytorch_model.bin").exists()  # safetensors only
    assert (home / "datasets" / "openai___gsm8k").is_dir()  # the processed cache lm-eval reads offline
    record = json.loads((work / "results/prefetch/models/tiny-hub.json").read_text())
    assert record["repo"] == MODEL_ID and record["revision"] == snapshot.name and "model.safetensors" in record["files"]


def test_offline_workflow_runs_the_hub_path_from_the_cache_without_a_request(offline_run):
    work, home, requests = offline_run
    assert requests == [], f"outgoing requests while offline: {requests[:10]}"
    main = pd.read_csv(work / "results/tables/main.csv").set_index("method")
    assert list(main.index) == ["nowag_p"]
    assert (main[["ppl_wikitext2", "ppl_c4"]] > 1).all().all() and main.loc["nowag_p", "zero_fraction"] == 0.5
    assert "Provenance: commit" in (work / "results/tables/main.md").read_text()
    downstream = pd.read_csv(work / "results/tables/downstream.csv")
    assert {"gsm8k", "arc_challenge", "mmlu"} <= set(downstream.columns) and len(downstream) == 1
    assert downstream[["gsm8k", "arc_challenge", "mmlu"]].notna().all().all()
    model = work / "results/models/tiny-hub"
    assert (model / "model.safetensors").is_symlink() and Path(os.path.realpath(model / "model.safetensors")).is_relative_to(home)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_offline_results_hold_no_copy_of_a_cache_file(offline_run):
    work, home, _ = offline_run
    blobs = [p for p in (home / "hub").rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size > 1 << 20]
    cached, inodes = {_sha256(p) for p in blobs}, {(p.stat().st_dev, p.stat().st_ino) for p in blobs}
    assert len(cached) == 2  # the model's weights and its tokenizer
    files = [p for p in (work / "results").rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size > 1 << 20]
    copies = [p for p in files if _sha256(p) in cached and (p.stat().st_dev, p.stat().st_ino) not in inodes]  # a hard link takes no space
    assert copies == []
    assert (work / "results/runs/tiny-hub/nowag_p/b0-s0/packed/tokenizer.json").stat().st_ino in {ino for _, ino in inodes}


def test_hf_token_never_lands_in_an_output_of_the_hub_path(offline_run):
    work, _, _ = offline_run
    leaked = [p for p in work.rglob("*") if p.is_file() and not p.is_symlink() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    assert (work / "results/report.html").is_file() and (work / "results/logs/prefetch/access.log").is_file()


def _copy_without(offline_run: tuple[Path, Path, list[str]], tmp_path: Path, remove: str, output: str) -> tuple[Path, Path]:
    """A copy of the finished workflow and its cache with one output and one cached item (a glob under the cache)
    removed: the job that remakes the output needs the item."""
    work, home, _ = offline_run
    home_copy, work_copy = tmp_path / "hf", tmp_path / "work"
    shutil.copytree(home, home_copy, symlinks=True)
    shutil.copytree(work, work_copy, symlinks=True)
    for link in (work_copy / "results/models/tiny-hub").iterdir():  # the model's links, into the copied cache
        if link.is_symlink():
            target = Path(os.readlink(link))
            link.unlink()
            link.symlink_to(home_copy / target.relative_to(home))
    for path in home_copy.glob(remove):
        shutil.rmtree(path) if path.is_dir() else Path(os.path.realpath(path)).unlink()
    (work_copy / output).unlink()
    return work_copy, home_copy


@pytest.mark.parametrize(
    ("remove", "output", "job_log", "named"),
    [
        pytest.param("hub/datasets--allenai--c4/snapshots/*/en/c4-validation.00000-of-00008.json.gz", "results/data/tiny-hub/eval_c4.safetensors",
                     "evaluation_data/tiny-hub/c4.log", "en/c4-validation.00000-of-00008.json.gz of the dataset repository allenai/c4",
                     marks=pytest.mark.slow),
        ("datasets/openai___gsm8k", "results/runs/tiny-hub/nowag_p/b0-s0/downstream.json",
         "lm_eval/tiny-hub/nowag_p/b0-s0.log", "the dataset config main of openai/gsm8k (lm-eval task gsm8k, downstream.tasks.gsm8k)"),
    ],
    ids=["c4-shard", "lm-eval-dataset"],
)
def test_offline_job_missing_a_cached_item_fails_within_a_minute_naming_it(offline_run, hub, tmp_path, remove, output, job_log, named):
    work, home = _copy_without(offline_run, tmp_path, remove, output)
    (work / "results/logs" / job_log).unlink()
    done = snakemake(work, hub_env(hub, home, offline=True), output)
    assert done.returncode != 0
    log = (work / "results/logs" / job_log).read_text()
    assert named in log and "is not in the Hugging Face cache" in log
    assert f"make prefetch CONFIG={os.path.relpath(HUB_CONFIG, ROOT)}" in log
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert (stamps[-1] - stamps[0]).total_seconds() < 60  # from the job's start to its error


def test_prefetch_names_a_gated_repository_before_downloading_anything(hub, tmp_path):
    start = time.perf_counter()
    done = make_prefetch(tmp_path / "work", hub_env(hub, tmp_path / "hf", token=None))
    assert done.returncode != 0 and time.perf_counter() - start < 60
    assert f"{MODEL_ID} (models.tiny-hub) is gated: accept its licence at {hub.url}/{MODEL_ID}, then set HF_TOKEN" in done.stdout + done.stderr
    assert not any(p.is_file() for p in (tmp_path / "hf").rglob("*"))  # nothing downloaded


@pytest.mark.parametrize(
    ("repo", "token", "says"),
    [
        ({"kind": "model", "repo": MODEL_ID, "needed_by": "models.tiny-hub"}, "hf_notGranted",
         f"{MODEL_ID} (models.tiny-hub) is gated and the account of your token has not been granted access: accept its licence at"),
        ({"kind": "dataset", "repo": "Idavidrein/gpqa", "needed_by": "downstream.tasks.gpqa_main"}, TOKEN,
         "no dataset repository Idavidrein/gpqa on {url} (check downstream.tasks.gpqa_main; a private one needs HF_TOKEN)"),
    ],
    ids=["token-not-granted", "missing-repository"],
)
def test_prefetch_access_check_names_each_repository_it_cannot_read(hub, monkeypatch, repo, token, says):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", token)
    fine = {"kind": "dataset", "repo": "allenai/c4", "needed_by": "text source c4"}
    with pytest.raises(PrefetchError) as err:
        check_access([fine, repo])
    assert str(err.value) == "the prefetch cannot read:\n  - " + says.format(url=hub.url) + (f" {hub.url}/{MODEL_ID}" if "gated" in says else "")
    assert check_access([fine])["checked"]


def test_offline_prefetch_checks_the_cache_without_a_request(prefetched, hub, monkeypatch):
    import huggingface_hub

    work, home, _ = prefetched
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    before = len(hub.requests)
    assert prefetch_model(MODEL_ID, None) == json.loads((work / "results/prefetch/models/tiny-hub.json").read_text())
    c4 = json.loads((work / "results/prefetch/text/c4.json").read_text())
    assert prefetch_text("allenai/c4", list(c4["files"])) == c4
    assert check_access([{"kind": "model", "repo": MODEL_ID, "needed_by": "models.tiny-hub"}])["checked"] is False
    with pytest.raises(NotInCacheError, match="en/c4-train.00000-of-01024.json.gz of the dataset repository allenai/c5"):
        prefetch_text("allenai/c5", ["en/c4-train.00000-of-01024.json.gz"])
    assert hub.requests[before:] == []


def test_model_folder_whose_cache_file_is_gone_names_it_before_loading(offline_run, tmp_path):
    work, _, _ = offline_run
    model = tmp_path / "tiny-hub"
    shutil.copytree(work / "results/models/tiny-hub", model, symlinks=True)
    target = Path(os.readlink(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(target.with_name("deleted-from-the-cache"))
    with pytest.raises(NotInCacheError, match=r"model.safetensors of the model repository armor-repro/tiny-llama \(linked from .*tiny-hub\) is not"):
        load_tokenizer(model)


def test_hub_plan_of_the_paper_grid():
    config = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    repos = {(r["kind"], r["repo"]): r["needed_by"] for r in repositories(config, load_index())}
    assert repos[("model", "meta-llama/Llama-2-70b-hf")] == "models.llama2-70b"
    assert repos[("dataset", "allenai/c4")] == "text source c4" and ("dataset", "Salesforce/wikitext") in repos
    assert repos[("dataset", "Idavidrein/gpqa")] == "downstream.tasks.gpqa_main"  # gated: checked before any download
    assert repos[("dataset", "cais/mmlu")] == "downstream.tasks.mmlu"
    assert text_parts(config) == {"c4": ["calibration", "evaluation"], "wikitext2": ["evaluation"]}


def test_offline_job_environment_keeps_the_users_network_settings_for_the_prefetch(monkeypatch):
    first = job_environment({"HOME": "/home/u"}, "make prefetch")
    assert first["HF_HUB_OFFLINE"] == first["HF_DATASETS_OFFLINE"] == "1" and first["HF_HOME"] == "/home/u/.cache/huggingface"
    assert json.loads(first[NETWORK_ENV]) == {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    again = job_environment(first, "make prefetch")  # a SLURM job parses the workflow again, in the offline environment
    assert again[NETWORK_ENV] == first[NETWORK_ENV]
    monkeypatch.setenv(NETWORK_ENV, json.dumps({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    use_network()
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # a user offline on purpose: the prefetch only checks the cache
    assert prefetch_command_for([ROOT / "config.yaml"], ROOT) == "make prefetch"
    assert prefetch_command_for([ROOT / "config/demo.yaml", ROOT / "config/demo-seeds.yaml"], ROOT) == "make prefetch CONFIG='config/demo.yaml config/demo-seeds.yaml'"
