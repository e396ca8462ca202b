rule perplexity:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}-s{seed}/pruned",
        windows=evaluation_inputs,
    output:
        ppl="results/runs/{model}/{method}/b{block_size}-s{seed}/perplexity.json",
        windows="results/runs/{model}/{method}/b{block_size}-s{seed}/window_nll.json",
    log:
        "results/logs/perplexity/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/perplexity/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=perplexity_gpus,
        runtime=runtime(4 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        datasets=list(config["evaluation"]["datasets"]),
        device=config["device"],
        batch_size=config["evaluation"]["batch_size"],
        stream=config["evaluation"]["stream_blocks"],
    script:
        "../scripts/evaluate/perplexity.py"


rule snapshot_perplexity:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}-s{seed}/pruned",
        windows=lambda wildcards: f"results/data/{wildcards.model}/eval_{config['evaluation']['snapshot_dataset']}.safetensors",
    output:
        "results/runs/{model}/{method}/b{block_size}-s{seed}/snapshots.json",
    log:
        "results/logs/snapshot_perplexity/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/snapshot_perplexity/{model}/{method}/b{block_size}-s{seed}.tsv"
    wildcard_constraints:
        method="|".join(ARMOR_METHODS) or "(?!)",
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=perplexity_gpus,
        runtime=runtime(4 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        iterations=snapshot_iterations,
        device=config["device"],
        batch_size=config["evaluation"]["batch_size"],
        stream=config["evaluation"]["stream_blocks"],
    script:
        "../scripts/evaluate/snapshot_perplexity.py"
