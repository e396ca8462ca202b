"""armor-repro: prune causal LMs to 2:4 with ARMOR and baselines, evaluate, tabulate."""

if (
    not workflow.overwrite_configfiles
):  # --configfile replaces the paper's grid instead of merging into it

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/data.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/build.smk"
include: "rules/benchmark.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        "results/tables/main.csv",
        "results/tables/speed.csv",
        "results/tables/layer_speed.csv",
