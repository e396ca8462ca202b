rule calibrate:
    input:
        model="results/models/{model}",
        windows="results/data/{model}/calibration.safetensors",
    output:
        directory("results/calibration/{model}"),
    log:
        "results/logs/calibrate/{model}.log",
    benchmark:
        "results/benchmarks/calibrate/{model}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=1,
        runtime=runtime(4 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        hessian=needs_hessian(),
        work="results/checkpoints/{model}/calibration",
        device=config["device"],
        batch_size=config["calibration"]["batch_size"],
    script:
        "../scripts/calibrate/calibrate.py"
