rule build:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}-s{seed}/pruned",
        summary="results/runs/{model}/{method}/b{block_size}-s{seed}/summary.json",
        perplexity="results/runs/{model}/{method}/b{block_size}-s{seed}/perplexity.json",
        downstream=downstream_input,
    output:
        directory("results/runs/{model}/{method}/b{block_size}-s{seed}/packed"),
    log:
        "results/logs/build/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/build/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        spec=model_spec,
        calibration=run_calibration,
        variant=lambda wildcards: VARIANTS[wildcards.method],
        options=method_options,
    script:
        "../scripts/build/build.py"


rule export_dense:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}-s{seed}/pruned",
        summary="results/runs/{model}/{method}/b{block_size}-s{seed}/summary.json",
        perplexity="results/runs/{model}/{method}/b{block_size}-s{seed}/perplexity.json",
        downstream=downstream_input,
    output:
        directory(
            "results/runs/{model}/{method}/b{block_size}-s{seed}/dense_equivalent"
        ),
    log:
        "results/logs/export_dense/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/export_dense/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        spec=model_spec,
        calibration=run_calibration,
        variant=lambda wildcards: VARIANTS[wildcards.method],
        options=method_options,
    script:
        "../scripts/build/export_dense.py"
