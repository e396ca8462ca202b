rule prune_part:
    input:
        model="results/models/{model}",
        calibration=calibration_dir,
    output:
        temp(
            directory(
                "results/runs/{model}/{method}/b{block_size}-s{seed}/parts/{part}"
            )
        ),
    log:
        "results/logs/prune/{model}/{method}/b{block_size}-s{seed}/part{part}.log",
    benchmark:
        "results/benchmarks/prune/{model}/{method}/b{block_size}-s{seed}/part{part}.tsv"
    priority: prune_priority
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=prune_mem_mb,
        gpu=1,
        runtime=runtime(24 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        method=base_method,
        options=method_options,
        blocks=lambda wildcards: part_blocks(wildcards.model, wildcards.part),
        work="results/checkpoints/{model}/{method}/b{block_size}-s{seed}/part{part}",
        device=config["device"],
    script:
        "../scripts/prune/prune_part.py"


rule prune_chain:
    input:
        model="results/models/{model}",
        windows=calibration_windows,
    output:
        temp(
            directory(
                "results/runs/{model}/{method}/b{block_size}-s{seed}/parts/chain"
            )
        ),
    log:
        "results/logs/prune/{model}/{method}/b{block_size}-s{seed}/chain.log",
    benchmark:
        "results/benchmarks/prune/{model}/{method}/b{block_size}-s{seed}/chain.tsv"
    priority: prune_priority
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=1,
        runtime=runtime(24 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        method=base_method,
        options=method_options,
        work="results/checkpoints/{model}/{method}/b{block_size}-s{seed}/chain",
        device=config["device"],
        batch_size=config["calibration"]["batch_size"],
    script:
        "../scripts/prune/prune_chain.py"


rule assemble:
    input:
        model="results/models/{model}",
        parts=part_dirs,
    output:
        pruned=directory("results/runs/{model}/{method}/b{block_size}-s{seed}/pruned"),
        layers="results/runs/{model}/{method}/b{block_size}-s{seed}/layers.csv",
        summary="results/runs/{model}/{method}/b{block_size}-s{seed}/summary.json",
        trace="results/runs/{model}/{method}/b{block_size}-s{seed}/trace.csv",
    log:
        "results/logs/assemble/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/assemble/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        method=base_method,
        options=method_options,
        mode=lambda wildcards: calibration_mode(wildcards.method),
    script:
        "../scripts/prune/assemble.py"
