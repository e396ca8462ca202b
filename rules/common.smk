import re

from armor.config import validate
from armor.methods import METHODS

validate(config)

ENV = "../envs/armor.yaml"


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),
    method="|".join(config["methods"]),
    block_size=r"\d+",
    dataset="|".join(config["evaluation"]["datasets"]),


def block_sizes(method):
    """ARMOR runs once per configured block size; every other method once, as b = 0."""
    return config["block_sizes"] if method == "armor" else [0]


RUNS = [
    {"model": model, "method": method, "block_size": b}
    for model in config["models"]
    for method in config["methods"]
    for b in block_sizes(method)
]


def run_dir(wildcards):
    """Folder of one model × method × block-size run."""
    return f"results/runs/{wildcards.model}/{wildcards.method}/b{wildcards.block_size}"


def model_spec(wildcards):
    return config["models"][wildcards.model]


def runtime(minutes):
    """Runtime in minutes that doubles with every retry (a job killed at its limit resumes longer)."""
    return lambda wildcards, attempt: minutes * 2 ** (attempt - 1)


def model_mem_mb(wildcards):
    return 1024 * config["models"][wildcards.model]["mem_gb"]


def calibration_input(wildcards):
    """Dense models need no calibration data."""
    if wildcards.method == "dense":
        return []
    return f"results/data/{wildcards.model}/calibration.safetensors"


def evaluation_inputs(wildcards):
    return [
        f"results/data/{wildcards.model}/eval_{name}.safetensors"
        for name in config["evaluation"]["datasets"]
    ]


def method_options(wildcards):
    """Options handed to the method: ARMOR's settings and block size, and the seed."""
    options = {"seed": config["calibration"]["seed"]}
    if wildcards.method == "armor":
        options |= config["armor"] | {"block_size": int(wildcards.block_size)}
    return options


def run_files(name):
    """One file of every configured run, in RUNS order."""
    return [
        f"results/runs/{r['model']}/{r['method']}/b{r['block_size']}/{name}"
        for r in RUNS
    ]
