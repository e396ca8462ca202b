rule calibration_data:
    input:
        model="results/models/{model}",
    output:
        "results/data/{model}/calibration.safetensors",
    params:
        source=config["calibration"]["source"],
        nsamples=config["calibration"]["nsamples"],
        seed=config["calibration"]["seed"],
        seqlen=lambda wildcards: model_spec(wildcards)["seqlen"],
    log:
        "results/logs/calibration_data/{model}.log",
    benchmark:
        "results/benchmarks/calibration_data/{model}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/calibration_data.py"


rule evaluation_data:
    input:
        model="results/models/{model}",
    output:
        "results/data/{model}/eval_{dataset}.safetensors",
    params:
        source=lambda wildcards: config["evaluation"]["datasets"][wildcards.dataset][
            "source"
        ],
        max_windows=lambda wildcards: config["evaluation"]["datasets"][
            wildcards.dataset
        ].get("max_windows"),
        seqlen=lambda wildcards: model_spec(wildcards)["seqlen"],
    log:
        "results/logs/evaluation_data/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/evaluation_data/{model}/{dataset}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/evaluation_data.py"
