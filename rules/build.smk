rule build:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}/pruned",
        summary="results/runs/{model}/{method}/b{block_size}/summary.json",
        perplexity="results/runs/{model}/{method}/b{block_size}/perplexity.json",
        downstream=downstream_input,
    output:
        directory("results/runs/{model}/{method}/b{block_size}/packed"),
    log:
        "results/logs/build/{model}/{method}/b{block_size}.log",
    benchmark:
        "results/benchmarks/build/{model}/{method}/b{block_size}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        spec=model_spec,
        calibration=config["calibration"],
        options=method_options,
    script:
        "../scripts/build/build.py"


rule export_dense:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}/pruned",
        summary="results/runs/{model}/{method}/b{block_size}/summary.json",
        perplexity="results/runs/{model}/{method}/b{block_size}/perplexity.json",
        downstream=downstream_input,
    output:
        directory("results/runs/{model}/{method}/b{block_size}/dense_equivalent"),
    log:
        "results/logs/export_dense/{model}/{method}/b{block_size}.log",
    benchmark:
        "results/benchmarks/export_dense/{model}/{method}/b{block_size}.tsv"
    conda:
        ENV
    resources:
        mem_mb=prune_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        spec=model_spec,
        calibration=config["calibration"],
        options=method_options,
    script:
        "../scripts/build/export_dense.py"
