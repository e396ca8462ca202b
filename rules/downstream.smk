rule lm_tasks:
    output:
        directory("results/data/lm_tasks"),
    log:
        "results/logs/lm_tasks.log",
    benchmark:
        "results/benchmarks/lm_tasks.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=runtime(30),
    params:
        names=LOCAL_TASKS,
        per_task=config["downstream"]["items"],
        seed=SEEDS[0],
    script:
        "../scripts/downstream/lm_tasks.py"


rule lm_eval:
    input:
        model="results/models/{model}",
        pruned="results/runs/{model}/{method}/b{block_size}-s{seed}/pruned",
        tasks=task_dir_input,
        prefetched=prefetched_tasks,
    output:
        "results/runs/{model}/{method}/b{block_size}-s{seed}/downstream.json",
    log:
        "results/logs/lm_eval/{model}/{method}/b{block_size}-s{seed}.log",
    benchmark:
        "results/benchmarks/lm_eval/{model}/{method}/b{block_size}-s{seed}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=model_mem_mb,
        gpu=model_gpus,
        runtime=runtime(8 * 60),
    params:
        dtype=lambda wildcards: model_spec(wildcards)["dtype"],
        tasks=TASKS,
        device=config["device"],
        batch_size=config["downstream"]["batch_size"],
    script:
        "../scripts/downstream/lm_eval.py"
