rule fetch_model:
    input:
        prefetched=prefetched_model,
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/fetch_model/{model}.log",
    benchmark:
        "results/benchmarks/fetch_model/{model}.tsv"
    conda:
        ENV
    resources:
        mem_mb=model_mem_mb,
        runtime=runtime(120),
    params:
        spec=model_spec,
    script:
        "../scripts/model/fetch_model.py"
