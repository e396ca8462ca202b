localrules:
    prefetch,
    prefetch_access,
    prefetch_model,
    prefetch_text,
    prefetch_task,


rule prefetch_access:
    output:
        "results/prefetch/access.json",
    log:
        "results/logs/prefetch/access.log",
    benchmark:
        "results/benchmarks/prefetch/access.tsv"
    conda:
        ENV
    params:
        repos=HUB_REPOS,
    script:
        "../scripts/prefetch/fetch.py"


rule prefetch_model:
    input:
        ancient("results/prefetch/access.json"),
    output:
        "results/prefetch/models/{model}.json",
    log:
        "results/logs/prefetch/models/{model}.log",
    benchmark:
        "results/benchmarks/prefetch/models/{model}.tsv"
    conda:
        ENV
    params:
        repo=lambda wildcards: model_spec(wildcards)["id"],
        revision=lambda wildcards: model_spec(wildcards).get("revision"),
    script:
        "../scripts/prefetch/fetch.py"


rule prefetch_text:
    input:
        ancient("results/prefetch/access.json"),
    output:
        "results/prefetch/text/{source}.json",
    log:
        "results/logs/prefetch/text/{source}.log",
    benchmark:
        "results/benchmarks/prefetch/text/{source}.tsv"
    conda:
        ENV
    params:
        repo=lambda wildcards: HUB_TEXT[wildcards.source].repo,
        files=lambda wildcards: text_files(
            wildcards.source, TEXT_PARTS[wildcards.source]
        ),
    script:
        "../scripts/prefetch/fetch.py"


rule prefetch_task:
    input:
        ancient("results/prefetch/access.json"),
    output:
        "results/prefetch/tasks/{task}.json",
    log:
        "results/logs/prefetch/tasks/{task}.log",
    benchmark:
        "results/benchmarks/prefetch/tasks/{task}.tsv"
    conda:
        ENV
    params:
        label=lambda wildcards: wildcards.task,
        spec=lambda wildcards: HARNESS_TASKS[wildcards.task],
    script:
        "../scripts/prefetch/fetch.py"


rule prefetch:
    input:
        prefetch_records(),
    output:
        "results/prefetch/cache.md",
    log:
        "results/logs/prefetch/cache.log",
    benchmark:
        "results/benchmarks/prefetch/cache.tsv"
    conda:
        ENV
    script:
        "../scripts/prefetch/summary.py"
