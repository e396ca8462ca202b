rule build:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}/pruned",
    output:
        directory("results/runs/{model}/{method}/b{block_size}/packed"),
    log:
        "results/logs/build/{model}/{method}/b{block_size}.log",
    benchmark:
        "results/benchmarks/build/{model}/{method}/b{block_size}.tsv"
    conda:
        ENV
    resources:
        mem_mb=model_mem_mb,
        runtime=runtime(60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
    script:
        "../scripts/build/build.py"
