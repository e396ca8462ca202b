rule fetch_model:
    output:
        directory("results/models/{model}"),
    params:
        spec=model_spec,
    log:
        "results/logs/fetch_model/{model}.log",
    benchmark:
        "results/benchmarks/fetch_model/{model}.tsv"
    resources:
        mem_mb=model_mem_mb,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/fetch_model.py"
