"""Provenance: the code state and environment behind every table."""

import json
import os
import subprocess

import torch

from armor.reporting.provenance import IMAGE_ENV, code_state, footnote, write_provenance


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
