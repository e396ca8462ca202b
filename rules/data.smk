rule calibration_data:
    input:
        model="results/models/{model}",
        prefetched=prefetched_text(config["calibration"]["source"]),
    output:
        "results/data/{model}/calibration-s{seed}.safetensors",
    log:
        "results/logs/calibration_data/{model}/s{seed}.log",
    benchmark:
        "results/benchmarks/calibration_data/{model}/s{seed}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=runtime(60),
    params:
        source=config["calibration"]["source"],
        nsamples=config["calibration"]["nsamples"],
        seed=lambda wildcards: int(wildcards.seed),
        seqlen=lambda wildcards: model_spec(wildcards)["seqlen"],
    script:
        "../scripts/data/calibration_data.py"


rule evaluation_data:
    input:
        model="results/models/{model}",
        prefetched=lambda wildcards: prefetched_text(
            config["evaluation"]["datasets"][wildcards.dataset]["source"]
        ),
    output:
        "results/data/{model}/eval_{dataset}.safetensors",
    log:
        "results/logs/evaluation_data/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/evaluation_data/{model}/{dataset}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=runtime(60),
    params:
        source=lambda wildcards: config["evaluation"]["datasets"][wildcards.dataset][
            "source"
        ],
        max_windows=lambda wildcards: config["evaluation"]["datasets"][
            wildcards.dataset
        ].get("max_windows"),
        seqlen=lambda wildcards: model_spec(wildcards)["seqlen"],
    script:
        "../scripts/data/evaluation_data.py"
