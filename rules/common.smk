import math
import os
import re
from pathlib import Path

from armor.config import validate
from armor.evaluation.task_index import check_tasks
from armor.hub.environment import job_environment, prefetch_command_for
from armor.prefetch.plan import (
    harness_tasks,
    hub_models,
    repositories,
    text_files,
    text_parts,
)
from armor.methods import METHODS
from armor.methods.variants import configured
from armor.pipeline.data import HUB_TEXT
from armor.pipeline.models import num_blocks
from armor.reporting.provenance import code_state
from armor.reporting.tables import BASELINES

validate(config)
TASK_INDEX = check_tasks(
    config["downstream"]["tasks"]
)  # refuses a task or metric the installed lm-eval lacks, naming the nearest

# Every job runs offline on the Hugging Face cache (HF_HOME); only the prefetch rules (rules/prefetch.smk) use the
# network. Set here, the variables reach local jobs, SLURM jobs (which parse this file again) and container jobs.
os.environ.update(
    job_environment(
        os.environ,
        prefetch_command_for(
            workflow.overwrite_configfiles or workflow.configfiles,
            Path(workflow.basedir),
        ),
    )
)
VARIANTS = configured(
    config
)  # every name in methods: the method it runs, its label and settings
ARMOR_METHODS = [name for name, v in VARIANTS.items() if v.is_armor]
BASELINE_METHODS = [name for name, v in VARIANTS.items() if v.method in BASELINES]
HUB_MODELS = hub_models(config)
TEXT_PARTS = text_parts(config)
HARNESS_TASKS = harness_tasks(config)
HUB_REPOS = repositories(config, TASK_INDEX)

ENV = "../envs/armor.yaml"
# the git commit, dirty flag and config hash: the provenance rule's params, so it reruns when any of them changes
CODE_STATE = code_state(Path(workflow.basedir), config)
CONTAINER = f"{workflow.basedir}/containers/armor.sif"  # apptainer build containers/armor.sif containers/armor.def


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),
    method="|".join(config["methods"]),
    block_size=r"\d+",
    part=r"\d+",
    seed=r"\d+",
    dataset="|".join(config["evaluation"]["datasets"]),
    source="|".join(HUB_TEXT),
    task="|".join(HARNESS_TASKS) or "(?!)",
    table="main|downstream|blocksize|iterations|speed",


def prefetched_model(wildcards):
    """The prefetch record of a hub model (its commit and files in the cache); ancient, so a new prefetch of the same
    files reruns nothing."""
    if wildcards.model not in HUB_MODELS:
        return []
    return ancient(f"results/prefetch/models/{wildcards.model}.json")


def prefetched_text(source):
    """The prefetch record of a hub text source, for the data rules."""
    return (
        ancient(f"results/prefetch/text/{source}.json") if source in TEXT_PARTS else []
    )


def prefetched_tasks(wildcards):
    """The prefetch records of the configured lm-eval harness tasks."""
    return [ancient(f"results/prefetch/tasks/{label}.json") for label in HARNESS_TASKS]


def prefetch_records():
    """Every prefetch record of the config: what `make prefetch` fills the cache with."""
    return (
        [f"results/prefetch/models/{name}.json" for name in HUB_MODELS]
        + [f"results/prefetch/text/{source}.json" for source in TEXT_PARTS]
        + [f"results/prefetch/tasks/{label}.json" for label in HARNESS_TASKS]
    )


def block_sizes(method):
    """ARMOR (and its variants) runs once per block size (its own block_sizes, else the config's); every other method
    once, as b = 0."""
    return VARIANTS[method].block_sizes(config["block_sizes"])


SEEDS = config["calibration"]["seeds"]


def seeds(method):
    """Calibration seeds a method runs with: every configured one; dense, which reads no calibration, the first."""
    return SEEDS[:1] if VARIANTS[method].method == "dense" else SEEDS


RUNS = [
    {
        "model": model,
        "method": method,
        "label": VARIANTS[method].label,
        "origin": VARIANTS[method].origin,
        "block_size": b,
        "seed": s,
    }
    for model in config["models"]
    for method in config["methods"]
    for b in block_sizes(method)
    for s in seeds(method)
]
FIRST_SEED_RUNS = [
    r for r in RUNS if r["seed"] == SEEDS[0]
]  # what the speed table times


def run_path(run):
    """Folder of one model × method × block size × seed run."""
    return f"results/runs/{run['model']}/{run['method']}/b{run['block_size']}-s{run['seed']}"


def run_dir(wildcards):
    """Folder of the run the wildcards name."""
    return run_path(wildcards)


def model_spec(wildcards):
    return config["models"][wildcards.model]


def runtime(minutes):
    """Runtime in minutes (times config runtime_scale, at least 1) that doubles with every retry."""
    base = max(1, math.ceil(minutes * config["runtime_scale"]))
    return lambda wildcards, attempt: base * 2 ** (attempt - 1)


def model_mem_mb(wildcards):
    """Host memory of a job holding the whole model or the calibration activations."""
    return 1024 * config["models"][wildcards.model]["mem_gb"]


def model_gpus(wildcards):
    """GPUs of a job holding the whole model: models.<name>.gpus."""
    return config["models"][wildcards.model]["gpus"]


def perplexity_gpus(wildcards):
    """GPUs of a perplexity job: one when it streams decoder blocks (evaluation.stream_blocks), else the model's."""
    return 1 if config["evaluation"]["stream_blocks"] else model_gpus(wildcards)


PRUNE_BASE_GB = 2  # interpreter, torch, the skeleton model
# Host bytes per parameter of the block in hand: with a GPU, the fp32 weights read and the results written (the
# solver state stays on the GPU); on the CPU also ARMOR's state (measured: about 75, docs/workflow.md: Memory).
PRUNE_BYTES_PER_PARAM = {"gpu": 24, "cpu": 96}


def prune_mem_mb(wildcards):
    """A prune job holds one decoder block: PRUNE_BASE_GB + bytes per parameter x params_b / blocks, in MB."""
    spec = config["models"][wildcards.model]
    if "params_b" not in spec:
        return model_mem_mb(wildcards)
    per_block = spec["params_b"] * 1e9 / blocks_of(wildcards.model)
    factor = PRUNE_BYTES_PER_PARAM["cpu" if config["device"] == "cpu" else "gpu"]
    return 1024 * math.ceil(PRUNE_BASE_GB + factor * per_block / 2**30)


BLOCKS = {
    model: num_blocks(spec, Path(f"results/models/{model}"))
    for model, spec in config["models"].items()
}  # read once, before any job: a missing local folder or GGUF file stops here, naming its key


def blocks_of(model):
    """Decoder blocks of a configured model."""
    return BLOCKS[model]


def calibration_mode(method):
    """independent, sequential (per method: its default, or calibration.mode.<method>), or none for dense."""
    base = VARIANTS[method].method
    if base == "dense":
        return "none"
    modes = config["calibration"]["mode"]
    return modes.get(method, modes.get(base, METHODS[base].default_mode))


def part_blocks(model, part):
    """The consecutive decoder blocks of one prune job (independent mode)."""
    k = config["prune"]["blocks_per_job"]
    return list(range(int(part) * k, min((int(part) + 1) * k, blocks_of(model))))


def prune_jobs(method, model):
    """A run's prune jobs by name: its parts (independent mode), the chain (sequential), or none (dense)."""
    mode = calibration_mode(method)
    if mode == "none":
        return []
    if mode == "sequential":
        return ["chain"]
    n_parts = math.ceil(blocks_of(model) / config["prune"]["blocks_per_job"])
    return [str(p) for p in range(n_parts)]


def part_dirs(wildcards):
    """The pruned-block folders a run is assembled from: one per prune job."""
    return [
        f"{run_dir(wildcards)}/parts/{job}"
        for job in prune_jobs(wildcards.method, wildcards.model)
    ]


def prune_benchmarks(run):
    """Snakemake's benchmark files of a run's prune jobs: what its pruning cost."""
    folder = f"results/benchmarks/prune/{run['model']}/{run['method']}/b{run['block_size']}-s{run['seed']}"
    return [
        f"{folder}/{job if job == 'chain' else f'part{job}'}.tsv"
        for job in prune_jobs(run["method"], run["model"])
    ]


def calibration_dir(wildcards):
    """Statistics of the calibration pass a run reads: its model's, on its seed's windows."""
    return f"results/calibration/{wildcards.model}/s{wildcards.seed}"


def calibration_windows(wildcards):
    """Calibration windows of a run's model drawn with its seed."""
    return f"results/data/{wildcards.model}/calibration-s{wildcards.seed}.safetensors"


def run_calibration(wildcards):
    """The calibration settings of one run: the config's, with its seed."""
    return {k: v for k, v in config["calibration"].items() if k != "seeds"} | {
        "seed": int(wildcards.seed)
    }


def needs_hessian():
    """Whether the calibration pass must record XᵀX: a method that needs it runs in independent mode."""
    return any(
        METHODS[v.method].needs_hessian(v.settings)
        and calibration_mode(m) == "independent"
        for m, v in VARIANTS.items()
    )


def evaluation_inputs(wildcards):
    return [
        f"results/data/{wildcards.model}/eval_{name}.safetensors"
        for name in config["evaluation"]["datasets"]
    ]


def base_method(wildcards):
    """The method a run's name runs (a variant's method, or the name itself)."""
    return VARIANTS[wildcards.method].method


def method_options(wildcards):
    """Options handed to the method: its settings (ARMOR's with its block size and iterations), and the run's
    calibration seed."""
    variant = VARIANTS[wildcards.method]
    options = {"seed": int(wildcards.seed)} | {
        k: v
        for k, v in variant.settings.items()
        if k not in ("iterations_by_block_size", "block_sizes")
    }
    if variant.is_armor:
        b = int(wildcards.block_size)
        options |= {"block_size": b, "iterations": variant.iterations(b)}
    return options


# One ARMOR iteration's cost per solver, relative to Adam's (SmolLM2 at b = 128, docs/time-to-quality-history.md)
SOLVER_COST = {"adam": 1, "exact": 4, "sweep": 34, "gauss_newton": 12}


def prune_priority(wildcards):
    """A prune job's scheduling priority: its ARMOR iterations times the solver's relative cost per iteration times
    the job's decoder blocks (0 for other methods), so the longest jobs start first and no long job is left to run
    alone at the end."""
    variant = VARIANTS[wildcards.method]
    if not variant.is_armor:
        return 0
    if hasattr(wildcards, "part"):
        blocks = len(part_blocks(wildcards.model, wildcards.part))
    else:
        blocks = blocks_of(wildcards.model)
    iterations = variant.iterations(int(wildcards.block_size))
    return iterations * SOLVER_COST[variant.settings["solver"]] * blocks


def run_files(name, runs=RUNS):
    """One file of every run (default: every configured one), in RUNS order."""
    return [f"{run_path(r)}/{name}" for r in runs]


ARMOR_RUNS = [r for r in RUNS if r["method"] in ARMOR_METHODS]
PRUNE_BENCHMARKS = [
    prune_benchmarks(r) for r in RUNS
]  # read by the tables (not inputs: they are there once a run's summary is)
TASKS = config["downstream"]["tasks"]
LOCAL_TASKS = sorted({spec["local"] for spec in TASKS.values() if "local" in spec})
TABLES = (
    ["main", "speed"]
    + ["downstream"] * bool(TASKS)
    + ["blocksize", "iterations"] * bool(ARMOR_RUNS)
)
FIGURES = ["pareto", "cost"] + ["iterations", "blocksize"] * bool(ARMOR_RUNS)


def downstream_input(wildcards):
    """A run's lm-eval scores, when the config names tasks (the model card shows them)."""
    return f"{run_dir(wildcards)}/downstream.json" if TASKS else []


def dense_reference(wildcards):
    """The dense packed model a run's speed is measured against (interleaved), when dense is configured."""
    return (
        f"results/runs/{wildcards.model}/dense/b0-s{SEEDS[0]}/packed"
        if "dense" in config["methods"]
        else []
    )


def task_dir_input(wildcards):
    """The folder of offline lm-eval tasks, when the config names any."""
    return "results/data/lm_tasks" if LOCAL_TASKS else []


def snapshot_iterations(wildcards):
    """An ARMOR run's snapshots that need their own perplexity: not 0 (NoWag-P's) nor its last iteration (its own)."""
    variant = VARIANTS[wildcards.method]
    last = variant.iterations(int(wildcards.block_size))
    return sorted(k for k in set(variant.settings["snapshots"]) if 0 < k < last)


def final_targets():
    """Every table (CSV, Markdown, LaTeX) and figure (PDF, PNG) the config calls for."""
    tables = [
        f"results/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")
    ]
    figures = [f"results/figures/{f}.{ext}" for f in FIGURES for ext in ("pdf", "png")]
    return tables + ["results/tables/layer_speed.csv"] + figures
