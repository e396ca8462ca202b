"""Provenance: the code state and environment behind every table."""

import json
import os
import subprocess

import pandas as pd
import torch

from armor.reporting.provenance import code_state, footnote, stamped, write_provenance
from armor.reporting.render import render
from armor.software import IMAGE_ENV


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_code_state_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    clean = code_state(repo, {"methods": ["armor"]})
    assert clean["commit"] == head and clean["dirty"] is False and len(clean["config_hash"]) == 16
    (repo / "untracked.txt").write_text("ignored\n")
    assert code_state(repo, {"methods": ["armor"]})["dirty"] is False
    (repo / "a.txt").write_text("two\n")
    assert code_state(repo, {"methods": ["armor"]})["dirty"] is True
    assert code_state(repo, {"methods": ["wanda"]})["config_hash"] != clean["config_hash"]
    assert code_state(tmp_path / "not-a-repo", {})["commit"] == "unknown"


def test_provenance_record_and_footnote(tmp_path, monkeypatch):
    state = {"commit": "0123456789abcdef0123", "dirty": True, "config_hash": "fedcba9876543210"}
    record = write_provenance(tmp_path / "provenance.json", state, torch.device("cpu"))
    assert json.loads((tmp_path / "provenance.json").read_text()) == record
    assert record["image"] == "host" and record["torch"] == torch.__version__ and record["device"].endswith(f"{os.cpu_count()} cores")
    note = footnote(record)
    assert note.startswith("Provenance: commit 0123456789ab (uncommitted changes), config fedcba9876543210, torch ")
    monkeypatch.setenv(IMAGE_ENV, "sha256:abc")
    assert write_provenance(tmp_path / "p2.json", state, torch.device("cpu"))["image"] == "sha256:abc"


def test_table_csvs_carry_the_provenance_and_rendering_leaves_it_to_the_footnote(tmp_path):
    state = {"commit": "0123456789abcdef0123", "dirty": False, "config_hash": "fedcba9876543210"}
    write_provenance(tmp_path / "provenance.json", state, torch.device("cpu"))
    runs = pd.DataFrame({"model": ["m", "m"], "method": ["dense", "armor"], "block_size": [0, 16], "commit": ["old", "old"]})
    table = stamped(runs, tmp_path / "provenance.json")
    assert list(table.columns) == ["model", "method", "block_size", "commit", "dirty", "config_hash"]  # a stale stamp is replaced
    assert table[["commit", "dirty", "config_hash"]].drop_duplicates().values.tolist() == [list(state.values())]
    downstream = table.assign(seeds=1, a=[0.5, 0.6], mean=[0.5, 0.6], a_stderr=0.05, mean_stderr=0.05)
    downstream.to_csv(tmp_path / "downstream.csv", index=False)
    shown = render("downstream", tmp_path / "downstream.csv", tmp_path / "d.md", tmp_path / "d.tex")
    assert list(shown.columns) == ["Model", "Method", "a", "Mean"]
