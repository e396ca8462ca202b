rule calibrate:
    input:
        model="results/models/{model}",
        windows=calibration_windows,
    output:
        directory("results/calibration/{model}/s{seed}"),
    log:
        "results/logs/calibrate/{model}/s{seed}.log",
    benchmark:
        "results/benchmarks/calibrate/{model}/s{seed}.tsv"
    priority: 1  # before the baselines' jobs: every ARMOR and NoWag-P prune job waits for it
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
        work="results/checkpoints/{model}/calibration/s{seed}",
        device=config["device"],
        batch_size=config["calibration"]["batch_size"],
    script:
        "../scripts/calibrate/calibrate.py"
