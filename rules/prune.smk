rule prune:
    input:
        model="results/models/{model}",
        calibration=calibration_input,
    output:
        pruned="results/runs/{model}/{method}/b{block_size}/pruned.safetensors",
        layers="results/runs/{model}/{method}/b{block_size}/layers.csv",
        summary="results/runs/{model}/{method}/b{block_size}/summary.json",
        trace="results/runs/{model}/{method}/b{block_size}/trace.csv",
    log:
        "results/logs/prune/{model}/{method}/b{block_size}.log",
    benchmark:
        "results/benchmarks/prune/{model}/{method}/b{block_size}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        runtime=runtime(24 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        options=method_options,
        mode=config["calibration"]["mode"],
        checkpoints="results/checkpoints/{model}/{method}/b{block_size}",
        device=config["device"],
        batch_size=config["calibration"]["batch_size"],
    script:
        "../scripts/prune.py"
