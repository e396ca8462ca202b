rule speed:
    input:
        packed="results/runs/{model}/{method}/b{block_size}-s{seed}/packed",
        reference=dense_reference,
    output:
        "results/runs/{model}/{method}/b{block_size}-s{seed}/speed.csv",
    log:
        "results/logs/speed/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/speed/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    threads: workflow.cores
    resources:
        mem_mb=model_mem_mb,
        gpu=model_gpus,
        runtime=runtime(60),
    params:
        batch_sizes=config["speed"]["batch_sizes"],
        prompt_len=config["speed"]["prompt_len"],
        decode_tokens=config["speed"]["decode_tokens"],
        rounds=config["speed"]["rounds"],
        dtype=config["speed"]["model_dtype"],
        device=config["device"],
        labels=lambda wildcards: {
            "label": VARIANTS[wildcards.method].label,
            "origin": VARIANTS[wildcards.method].origin,
        },
    script:
        "../scripts/benchmark/speed.py"


rule speed_table:
    input:
        runs=run_files("speed.csv", FIRST_SEED_RUNS),
        provenance="results/provenance.json",
    output:
        report(
            "results/tables/speed.csv",
            caption="../report/speed.rst",
            category="Tables",
            subcategory="Speed",
        ),
    log:
        "results/logs/tables/speed.log",
    benchmark:
        "results/benchmarks/tables/speed.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/benchmark/speed_table.py"


rule layer_speed:
    input:
        provenance="results/provenance.json",
    output:
        report(
            "results/tables/layer_speed.csv",
            caption="../report/layer_speed.rst",
            category="Tables",
            subcategory="Speed",
        ),
    log:
        "results/logs/tables/layer_speed.log",
    benchmark:
        "results/benchmarks/tables/layer_speed.tsv"
    conda:
        ENV
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=runtime(60),
    params:
        models=config["speed"]["layer_models"],
        block_sizes=config["speed"]["layer_block_sizes"],
        tokens=config["speed"]["layer_tokens"],
        rounds=config["speed"]["rounds"],
        dtype=config["speed"]["layer_dtype"],
        device=config["device"],
    script:
        "../scripts/benchmark/layer_speed.py"
