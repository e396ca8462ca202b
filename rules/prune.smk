rule prune_part:
    input:
        model="results/models/{model}",
        calibration=lambda wildcards: calibration_dir(wildcards.model),
    output:
        temp(directory("results/runs/{model}/{method}/b{block_size}/parts/{part}")),
    log:
        "results/logs/prune/{model}/{method}/b{block_size}/part{part}.log",
    benchmark:
        "results/benchmarks/prune/{model}/{method}/b{block_size}/part{part}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=prune_mem_mb,
        gpu=1,
        runtime=runtime(24 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        options=method_options,
        blocks=lambda wildcards: part_blocks(wildcards.model, wildcards.part),
        work="results/checkpoints/{model}/{method}/b{block_size}/part{part}",
        device=config["device"],
    script:
        "../scripts/prune/prune_part.py"


rule prune_chain:
    input:
        model="results/models/{model}",
        windows="results/data/{model}/calibration.safetensors",
    output:
        temp(directory("results/runs/{model}/{method}/b{block_size}/parts/chain")),
    log:
        "results/logs/prune/{model}/{method}/b{block_size}/chain.log",
    benchmark:
        "results/benchmarks/prune/{model}/{method}/b{block_size}/chain.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=1,
        runtime=runtime(24 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        options=method_options,
        work="results/checkpoints/{model}/{method}/b{block_size}/chain",
        device=config["device"],
        batch_size=config["calibration"]["batch_size"],
    script:
        "../scripts/prune/prune_chain.py"


rule assemble:
    input:
        model="results/models/{model}",
        parts=part_dirs,
    output:
        pruned=directory("results/runs/{model}/{method}/b{block_size}/pruned"),
        layers="results/runs/{model}/{method}/b{block_size}/layers.csv",
        summary="results/runs/{model}/{method}/b{block_size}/summary.json",
        trace="results/runs/{model}/{method}/b{block_size}/trace.csv",
    log:
        "results/logs/assemble/{model}/{method}/b{block_size}.log",
    benchmark:
        "results/benchmarks/assemble/{model}/{method}/b{block_size}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        options=method_options,
        mode=lambda wildcards: calibration_mode(wildcards.method),
    script:
        "../scripts/prune/assemble.py"
