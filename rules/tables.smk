rule main_table:
    input:
        summaries=run_files("summary.json"),
        perplexities=run_files("perplexity.json"),
        window_nll=run_files("window_nll.json"),
        provenance="results/provenance.json",
    output:
        main=report(
            "results/tables/main.csv",
            caption="../report/main.rst",
            category="Tables",
            subcategory="Perplexity",
        ),
        by_seed=report(
            "results/tables/main_by_seed.csv",
            caption="../report/main_by_seed.rst",
            category="Tables",
            subcategory="Perplexity",
        ),
    log:
        "results/logs/tables/main.log",
    benchmark:
        "results/benchmarks/tables/main.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    params:
        runs=RUNS,
        baselines=BASELINE_METHODS,
        benchmarks=PRUNE_BENCHMARKS,
    script:
        "../scripts/tables/main_table.py"


rule downstream_table:
    input:
        runs=run_files("downstream.json"),
        summaries=run_files("summary.json"),
        provenance="results/provenance.json",
    output:
        report(
            "results/tables/downstream.csv",
            caption="../report/downstream.rst",
            category="Tables",
            subcategory="Downstream",
        ),
    log:
        "results/logs/tables/downstream.log",
    benchmark:
        "results/benchmarks/tables/downstream.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    params:
        runs=RUNS,
        benchmarks=PRUNE_BENCHMARKS,
    script:
        "../scripts/tables/downstream_table.py"


rule blocksize_table:
    input:
        main="results/tables/main.csv",
        provenance="results/provenance.json",
    output:
        report(
            "results/tables/blocksize.csv",
            caption="../report/blocksize.rst",
            category="Tables",
            subcategory="ARMOR",
        ),
    log:
        "results/logs/tables/blocksize.log",
    benchmark:
        "results/benchmarks/tables/blocksize.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    params:
        methods=ARMOR_METHODS,
    script:
        "../scripts/tables/blocksize_table.py"


rule iterations_table:
    input:
        by_seed="results/tables/main_by_seed.csv",
        traces=run_files("trace.csv", ARMOR_RUNS),
        snapshots=run_files("snapshots.json", ARMOR_RUNS),
        provenance="results/provenance.json",
    output:
        report(
            "results/tables/iterations.csv",
            caption="../report/iterations.rst",
            category="Tables",
            subcategory="ARMOR",
        ),
    log:
        "results/logs/tables/iterations.log",
    benchmark:
        "results/benchmarks/tables/iterations.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    params:
        runs=ARMOR_RUNS,
        dataset=config["evaluation"]["snapshot_dataset"],
    script:
        "../scripts/tables/iterations_table.py"


rule provenance:
    output:
        report(
            "results/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/tables/provenance.log",
    benchmark:
        "results/benchmarks/tables/provenance.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    params:
        state=CODE_STATE,
        device=config["device"],
    script:
        "../scripts/tables/provenance.py"


rule render_table:
    input:
        table="results/tables/{table}.csv",
        provenance="results/provenance.json",
    output:
        markdown="results/tables/{table}.md",
        latex="results/tables/{table}.tex",
    log:
        "results/logs/tables/render_{table}.log",
    benchmark:
        "results/benchmarks/tables/render_{table}.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/tables/render_table.py"
