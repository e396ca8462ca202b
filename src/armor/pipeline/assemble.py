"""Assembling a run from its pruned blocks: sharded safetensors with an index (the Hugging Face layout), layers.csv,
trace.csv and summary.json, written one block file at a time."""

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from armor.optimizer.blockdiag import block_params
from armor.pipeline.blocks import WeightFiles, block_linears, decoder_layers, layers_path, skeleton
from armor.pipeline.checkpoint import atomic_dir, atomic_write_json, atomic_write_text, read_meta, verify
from armor.pipeline.faults import after_block
from armor.pipeline.fingerprint import changed, digest
from armor.pipeline.models import dtype_name
from armor.pipeline.prune import BLOCK_FILE, run_settings
from armor.software import software
from armor.sparsity import zero_count

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
SHARD = "model-{:05d}-of-{:05d}.safetensors"
LAYER_COLUMNS = ["layer", "d_out", "d_in", "proxy_loss", "zeros", "numel"]


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    """Write a header and rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _link(src: Path, dst: Path) -> None:
    """A hard link where the filesystem allows one, a copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _trace_rows(file: Path) -> list[list[Any]]:
    """ARMOR's proxy loss of every optimised layer at every traced iteration, from one block file (none otherwise)."""
    rows = []
    with safe_open(file, framework="pt") as f:
        for key in sorted(k for k in f.keys() if k.endswith(".trace")):
            layer = key.removesuffix(".trace")
            iterations = f.get_tensor(f"{layer}.trace_iterations").tolist()
            rows += [[layer, it, f"{loss:.8g}"] for it, loss in zip(iterations, f.get_tensor(key).tolist(), strict=True)]
    return rows


def _dense_records(model_dir: Path, dtype: torch.dtype) -> Iterable[dict[str, Any]]:
    """One record per decoder linear of the unpruned model, reading one block's weights at a time."""
    model, files = skeleton(model_dir, dtype), WeightFiles(model_dir)
    path = layers_path(model)
    for index, block in enumerate(decoder_layers(model)):
        names = [f"{path}.{index}.{name}" for name in block_linears(block)]
        for name, weight in files.load([f"{n}.weight" for n in names], None, torch.device("cpu")).items():
            yield {"layer": name.removesuffix(".weight"), "d_out": weight.shape[0], "d_in": weight.shape[1], "proxy_loss": 0.0,
                   "zeros": zero_count(weight), "numel": weight.numel()}


def assemble(
    model_dir: Path, dtype: torch.dtype, method: str, options: dict[str, Any], mode: str, parts: list[Path],
    pruned_dir: Path, run_dir: Path,
) -> dict[str, Any]:
    """Write the run: pruned_dir (one safetensors file per block + index), layers.csv, trace.csv, summary.json."""
    files = sorted((f for part in parts for f in Path(part).glob(BLOCK_FILE.replace("{:04d}", "*"))), key=lambda f: f.name)
    n_blocks = len(decoder_layers(skeleton(model_dir, dtype)))
    if method != "dense" and [f.name for f in files] != [BLOCK_FILE.format(i) for i in range(n_blocks)]:
        raise ValueError(f"{method}: expected pruned blocks 0..{n_blocks - 1} in {[str(p) for p in parts]}, found {[f.name for f in files]}")
    records: list[dict[str, Any]] = []
    trace: list[list[Any]] = []
    weight_map: dict[str, str] = {}
    fingerprints: list[str] = []
    seconds = 0.0
    parts: dict[str, float] = {}
    devices: set[str] = set()
    gpu = False
    expected = run_settings(model_dir, dtype_name(dtype), method, options)
    with atomic_dir(pruned_dir) as tmp:
        for number, file in enumerate(files, 1):
            verify(file)
            shard = SHARD.format(number, len(files))
            _link(file, tmp / shard)
            meta = read_meta(file)
            made_with = {key: meta.get("settings", {}).get(key) for key in expected}
            if made_with != expected:
                raise ValueError(f"{file} was pruned with other settings than this run's ({'; '.join(changed(made_with, expected))})")
            fingerprints.append(meta["fingerprint"])
            records += meta["layers"]
            seconds += meta["seconds"]
            for part, spent in meta.get("parts", {}).items():
                parts[part] = parts.get(part, 0.0) + spent
            devices.add(meta.get("device", "unknown"))
            gpu = gpu or meta.get("gpu", False)
            trace += _trace_rows(file)
            with safe_open(file, framework="pt") as f:
                weight_map |= {key: shard for key in f.keys()}
            after_block("assemble", number, number - 1)
        fingerprint = digest({"run": expected, "mode": mode, "blocks": fingerprints})
        index_meta = {"format": "armor-run", "method": method, "calibration_mode": mode, "blocks": n_blocks, "options": options,
                      "fingerprint": fingerprint}
        atomic_write_json(tmp / INDEX, {"metadata": index_meta, "weight_map": weight_map})
    if method == "dense":
        records = list(_dense_records(model_dir, dtype))
    numel = sum(r["numel"] for r in records)
    b = options.get("block_size") if method == "armor" else None
    wrappers = sum(block_params(r["d_out"], b) + block_params(r["d_in"], b) for r in records) if b else 0
    summary = {
        "method": method,
        "proxy_loss": sum(r["proxy_loss"] for r in records) / len(records),
        "zero_fraction": sum(r["zeros"] for r in records) / numel,
        "overhead": wrappers / numel,
        "prune_seconds": seconds,
        "prune_parts": parts,  # seconds summed over blocks: read, calibration (sequential), method; ARMOR's method = start + solver + refit
        "prune_device": ", ".join(sorted(devices)),
        "prune_gpu": gpu,
        "calibration_mode": mode if method != "dense" else "none",
        "blocks": n_blocks,
        "layers": len(records),
        "fingerprint": fingerprint,
        "software": software(),
    }
    if method == "armor":
        summary |= {key: sum(r[key] for r in records) for key in ("guard_rejected", "guard_skipped")}
        parts |= {key: sum(r.get(f"{key}_seconds", 0.0) for r in records) for key in ("start", "solver", "refit")}
        summary["mean_iterations"] = sum(r["iterations"] for r in records) / len(records)
    _write_csv(run_dir / "layers.csv", LAYER_COLUMNS, ([r[k] for k in LAYER_COLUMNS] for r in records))
    _write_csv(run_dir / "trace.csv", ["layer", "iteration", "proxy_loss"], trace)
    atomic_write_json(run_dir / "summary.json", summary)
    log.info("%s: %d blocks, mean proxy loss %.4f, zero fraction %.4f, %.1fs of pruning", method, n_blocks, summary["proxy_loss"], summary["zero_fraction"], seconds)
    return summary


def run_files(pruned_dir: Path) -> list[Path]:
    """The block files of an assembled run, in block order."""
    weight_map = json.loads((Path(pruned_dir) / INDEX).read_text())["weight_map"]
    return [Path(pruned_dir) / name for name in sorted(set(weight_map.values()))]


def run_metadata(pruned_dir: Path) -> dict[str, Any]:
    """The metadata of an assembled run's index: method, calibration mode, options."""
    return json.loads((Path(pruned_dir) / INDEX).read_text())["metadata"]
