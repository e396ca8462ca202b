"""Faults and bad input: what the user sees for each (see docs/faults.md)."""

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from armor.hub.environment import PREFETCH_COMMAND_ENV, NotInCacheError
from armor.prefetch.fetch import PrefetchError, check_access
from armor.pipeline import checkpoint
from armor.pipeline.assemble import assemble
from armor.pipeline.calibration import calibrate
from armor.pipeline.checkpoint import load_tensors, read_meta
from armor.pipeline.data import calibration_windows
from armor.pipeline.faults import DELAY_ENV, FAULT_ENV, STAGE_ENV
from armor.pipeline.models import ModelFetchError, fetch_model, load_model, load_tokenizer
from armor.pipeline.prune import prune_part
from armor.pipeline.runs import block_tensors
from armor.pipeline.stats import NonFiniteStatsError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_statistics_stop_the_pass_naming_the_layer(tiny_model_dir, tmp_path, bad):
    model, tokenizer = load_model(tiny_model_dir, "float32")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = bad  # down_proj of block 1 then sees non-finite inputs
    model.save_pretrained(tmp_path / "model")
    windows = calibration_windows(tokenizer, "gensim_news", 4, 32, 0)
    with pytest.raises(NonFiniteStatsError, match=r"layer model\.layers\.1\.mlp\.down_proj contain NaN or Inf"):
        calibrate(tmp_path / "model", torch.float32, windows, tmp_path / "out", tmp_path / "work", torch.device("cpu"), 4, hessian=False)
    assert (tmp_path / "work/block_0000.safetensors").exists()  # block 0 was fine and stays recorded
    assert not (tmp_path / "work/block_0001.safetensors").exists() and not (tmp_path / "out").exists()


def test_prefetch_without_network_fails_within_seconds_naming_the_repository():
    start = time.perf_counter()
    with pytest.raises(PrefetchError, match=r"(cannot reach https://huggingface.co for|no model repository) no-such-org/no-such-model"):
        check_access([{"kind": "model", "repo": "no-such-org/no-such-model", "needed_by": "models.m"}])
    assert time.perf_counter() - start < 30


def test_hub_model_missing_from_the_cache_names_the_file_and_the_prefetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv(PREFETCH_COMMAND_ENV, "make prefetch CONFIG=my.yaml")
    spec = {"source": "hub", "id": "meta-llama/Llama-2-7b-hf", "dtype": "float16"}
    record = {"repo": "meta-llama/Llama-2-7b-hf", "revision": "0" * 40, "files": {"config.json": 600}}
    with pytest.raises(NotInCacheError, match=rf"config.json of the model repository meta-llama/Llama-2-7b-hf at revision {'0' * 40} is "
                                              rf"not in the Hugging Face cache at {tmp_path}/hf. Jobs run offline: fetch it with `make prefetch CONFIG=my.yaml`"):
        fetch_model(spec, tmp_path / "model", record)
    with pytest.raises(ModelFetchError, match=r"models.model: a hub model is read from the Hugging Face cache; prefetch it first"):
        fetch_model(spec, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_missing_model_package_says_how_to_install(tmp_path):
    with pytest.raises(ModelFetchError, match=r"package 'no_such_package' is not installed"):
        fetch_model({"source": "gguf", "package": "no_such_package", "file": "m.gguf", "dtype": "float32"}, tmp_path / "m")


def _snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The tiny workflow started in workdir with extra arguments and environment, output piped."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args, "--configfile", str(TINY)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


@pytest.mark.slow  # about 2 minutes: the first workflow runs its whole target
def test_second_workflow_on_the_same_results_is_refused_by_the_lock(tmp_path):
    target = "results/runs/tiny-llama/sparsegpt/b0-s0/summary.json"
    first = _snakemake(tmp_path, target, env={DELAY_ENV: "4"})
    lock_dir = tmp_path / ".snakemake/locks"
    deadline = time.time() + 120
    while not (lock_dir.exists() and any(lock_dir.iterdir())) and time.time() < deadline:
        time.sleep(0.5)
    second = _snakemake(tmp_path, target)
    second_out, _ = second.communicate(timeout=300)
    first_out, _ = first.communicate(timeout=600)
    assert second.returncode != 0 and "Directory cannot be locked" in second_out
    assert first.returncode == 0, first_out[-4000:]
    weights = [k for block in block_tensors(tmp_path / "results/runs/tiny-llama/sparsegpt/b0-s0/pruned") for k in block if k.endswith(".weight")]
    assert len(weights) == 3 * 7


# The fault matrix of the block pipeline (docs/faults.md): each row is one test below.

CPU = torch.device("cpu")
ARMOR = {"block_size": 16, "iterations": 3, "lr": 1e-3, "trace_every": 1}


@pytest.fixture
def tiny(tiny_model_dir: Path) -> tuple[Path, torch.Tensor]:
    """The tiny 3-block Llama and 4 calibration windows of 32 tokens."""
    return tiny_model_dir, calibration_windows(load_tokenizer(tiny_model_dir), "gensim_news", 4, 32, 0)


def _killed(call: str, stage: str, after: int = 1) -> subprocess.CompletedProcess:
    """Run a pipeline call in a fresh Python that SIGKILLs itself after `after` finished blocks of `stage`."""
    code = ("import torch; from pathlib import Path; from armor import logs; from armor.pipeline.calibration import calibrate; "
            f"from armor.pipeline.prune import prune_part; from armor.pipeline.assemble import assemble; logs.setup(); {call}")
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, FAULT_ENV: str(after), STAGE_ENV: stage}, capture_output=True, text=True)


def _same_files(first: Path, second: Path) -> None:
    """Two folders of block files hold the same names and identical tensors."""
    names = sorted(p.name for p in first.glob("*.safetensors"))
    assert names == sorted(p.name for p in second.glob("*.safetensors")) and names
    for name in names:
        a, b = load_tensors(first / name)[0], load_tensors(second / name)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_inside_calibrate_resumes_to_the_same_statistics(tiny, tmp_path):
    folder, windows = tiny
    torch.save(windows, tmp_path / "windows.pt")
    call = (f"calibrate(Path({str(folder)!r}), torch.float32, torch.load({str(tmp_path / 'windows.pt')!r}), Path({str(tmp_path / 'out')!r}), "
            f"Path({str(tmp_path / 'work')!r}), torch.device('cpu'), 4, hessian=True)")
    killed = _killed(call, "calibrate")
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (tmp_path / "work").glob("*.safetensors")) == ["block_0000.safetensors"] and not (tmp_path / "out").exists()
    resumed = _killed(call, "prune")  # the fault is armed for another stage: the pass runs through
    assert resumed.returncode == 0, resumed.stderr
    assert "calibration resumed: kept 1 finished block(s), discarded 0 (none)" in resumed.stderr
    calibrate(folder, torch.float32, windows, tmp_path / "fresh", tmp_path / "work2", CPU, 4, hessian=True)
    _same_files(tmp_path / "fresh", tmp_path / "out")


def test_sigkill_inside_assemble_leaves_no_run_and_a_rerun_writes_it(tiny, tmp_path):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", CPU, 4, hessian=False)
    prune_part(folder, "float32", "magnitude", {}, [0, 1, 2], tmp_path / "calib", tmp_path / "ckpt", tmp_path / "part", CPU)
    call = (f"assemble(Path({str(folder)!r}), torch.float32, 'magnitude', {{}}, 'independent', [Path({str(tmp_path / 'part')!r})], "
            f"Path({str(tmp_path / 'run/pruned')!r}), Path({str(tmp_path / 'run')!r}))")
    killed = _killed(call, "assemble")
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "run/pruned").exists() and not (tmp_path / "run/summary.json").exists()
    assemble(folder, torch.float32, "magnitude", {}, "independent", [tmp_path / "part"], tmp_path / "run/pruned", tmp_path / "run")
    assert len(list(block_tensors(tmp_path / "run/pruned"))) == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["layers.csv", "pruned", "summary.json", "trace.csv"]  # no leftovers


def test_a_settings_change_between_kill_and_rerun_recomputes_the_finished_blocks(tiny, tmp_path, caplog):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", CPU, 4, hessian=False)
    call = (f"prune_part(Path({str(folder)!r}), 'float32', 'armor', {ARMOR!r}, [0, 1], Path({str(tmp_path / 'calib')!r}), "
            f"Path({str(tmp_path / 'ckpt')!r}), Path({str(tmp_path / 'out')!r}), torch.device('cpu'))")
    killed = _killed(call, "prune")
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors")) == ["block_0000.safetensors"]
    raised = ARMOR | {"iterations": 40}  # "raise the iterations and resubmit"
    with caplog.at_level("INFO"):
        prune_part(folder, "float32", "armor", raised, [0, 1], tmp_path / "calib", tmp_path / "ckpt", tmp_path / "out", CPU)
    assert "discarding block_0000.safetensors, made with other settings (options.iterations: 3 -> 40)" in caplog.text
    assert "kept 0 finished block(s), discarded 1 (1 settings changed)" in caplog.text
    for file in sorted((tmp_path / "out").glob("*.safetensors")):
        assert read_meta(file)["settings"]["options"]["iterations"] == 40
    prune_part(folder, "float32", "armor", raised, [0, 1], tmp_path / "calib", tmp_path / "ckpt2", tmp_path / "fresh", CPU)
    _same_files(tmp_path / "fresh", tmp_path / "out")


def test_new_calibration_windows_discard_recorded_statistics(tiny, tmp_path, caplog):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "old", tmp_path / "work", CPU, 4, hessian=False)
    (tmp_path / "work").mkdir()
    shutil.copy(tmp_path / "old/block_0000.safetensors", tmp_path / "work")  # as a killed pass leaves it
    shutil.copy(tmp_path / "old/block_0000.safetensors.sha256", tmp_path / "work")
    other = calibration_windows(load_tokenizer(folder), "gensim_news", 4, 32, 1)  # another seed
    with caplog.at_level("INFO"):
        calibrate(folder, torch.float32, other, tmp_path / "new", tmp_path / "work", CPU, 4, hessian=False)
    assert re.search(r"calibration: discarding block_0000\.safetensors, made with other settings \(windows: \w+ -> \w+\)", caplog.text)
    assert read_meta(tmp_path / "new/block_0000.safetensors")["fingerprint"] != read_meta(tmp_path / "old/block_0000.safetensors")["fingerprint"]


def test_blocks_pruned_with_other_settings_are_not_assembled_into_one_run(tiny, tmp_path):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", CPU, 4, hessian=False)
    prune_part(folder, "float32", "armor", ARMOR, [0, 1], tmp_path / "calib", tmp_path / "c1", tmp_path / "p1", CPU)
    prune_part(folder, "float32", "armor", ARMOR | {"iterations": 4}, [2], tmp_path / "calib", tmp_path / "c2", tmp_path / "p2", CPU)
    with pytest.raises(ValueError, match=r"block_0002\.safetensors was pruned with other settings than this run's \(options\.iterations: 4 -> 3\)"):
        assemble(folder, torch.float32, "armor", ARMOR, "independent", [tmp_path / "p1", tmp_path / "p2"], tmp_path / "run/pruned", tmp_path / "run")
    assert not (tmp_path / "run/pruned").exists()


def test_no_space_left_while_a_block_is_written_keeps_the_finished_blocks(tiny, tmp_path, monkeypatch):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", CPU, 4, hessian=False)
    real_save, calls = checkpoint.save_file, []

    def full_disk(tensors: dict, path: str, metadata: dict) -> None:
        """The second block file fills the disk halfway through."""
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError, match=r"could not write .*block_0001\.safetensors \(No space left on device\); files written before it are intact"):
        prune_part(folder, "float32", "magnitude", {}, [0, 1, 2], tmp_path / "calib", tmp_path / "ckpt", tmp_path / "out", CPU)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["block_0000.safetensors", "block_0000.safetensors.sha256"]
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    prune_part(folder, "float32", "magnitude", {}, [0, 1, 2], tmp_path / "calib", tmp_path / "ckpt", tmp_path / "out", CPU)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 3


def test_a_truncated_model_file_is_named(tiny, tmp_path):
    folder, windows = tiny
    broken = tmp_path / "model"
    shutil.copytree(folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(weights))} is not a readable safetensors file .*fetch the model again"):
        calibrate(broken, torch.float32, windows, tmp_path / "out", tmp_path / "work", CPU, 4, hessian=False)
    assert not (tmp_path / "out").exists()


def test_a_corrupted_statistics_file_is_named(tiny, tmp_path):
    folder, windows = tiny
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", CPU, 4, hessian=False)
    stats = tmp_path / "calib/block_0001.safetensors"
    data = bytearray(stats.read_bytes())
    data[-1] ^= 0xFF
    stats.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"checksum mismatch or missing checksum for {re.escape(str(stats))}"):
        prune_part(folder, "float32", "magnitude", {}, [0, 1, 2], tmp_path / "calib", tmp_path / "ckpt", tmp_path / "out", CPU)
    assert not (tmp_path / "out").exists()


def test_the_documented_fault_matrix_names_existing_tests_and_every_matrix_test():
    doc = (ROOT / "docs" / "faults.md").read_text().split("## The fault matrix of the block pipeline", 1)[1]
    named = set()
    for line in (line for line in doc.splitlines() if line.startswith("| ")):
        for ref in re.findall(r"`([^`]+)`", line.split(" | ")[-1]):  # the test column
            path, _, test = ref.partition("::") if ref.startswith("tests/") else ("tests/test_faults.py", "", ref)
            source = (ROOT / path).read_text()
            assert not test or f"def {test}(" in source, f"docs/faults.md names {ref}, which does not exist"
            if path == "tests/test_faults.py":
                named.add(test)
    matrix = Path(__file__).read_text().split("# The fault matrix of the block pipeline", 1)[1]
    tests = set(re.findall(r"^def (test_\w+)\(", matrix, re.M)) - {"test_the_documented_fault_matrix_names_existing_tests_and_every_matrix_test"}
    assert tests <= named, f"fault-matrix tests missing from docs/faults.md: {sorted(tests - named)}"
