"""armor-repro: prune causal LMs to 2:4 with ARMOR and baselines, evaluate, tabulate."""

if (
    not workflow.overwrite_configfiles
):  # --configfile replaces the paper's grid instead of merging into it

    configfile: "config.yaml"


include: "rules/common.smk"


container: CONTAINER  # used with --sdm apptainer (every rule; README: Apptainer)


include: "rules/prefetch.smk"
include: "rules/model.smk"
include: "rules/data.smk"
include: "rules/calibrate.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/build.smk"
include: "rules/benchmark.smk"
include: "rules/downstream.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        final_targets(),
