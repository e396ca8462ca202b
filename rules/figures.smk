rule iterations_figure:
    input:
        "results/tables/iterations.csv",
    output:
        pdf="results/figures/iterations.pdf",
        png=report(
            "results/figures/iterations.png",
            caption="../report/fig_iterations.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/iterations.log",
    benchmark:
        "results/benchmarks/figures/iterations.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/figures/iterations_figure.py"


rule blocksize_figure:
    input:
        "results/tables/blocksize.csv",
    output:
        pdf="results/figures/blocksize.pdf",
        png=report(
            "results/figures/blocksize.png",
            caption="../report/fig_blocksize.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/blocksize.log",
    benchmark:
        "results/benchmarks/figures/blocksize.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/figures/blocksize_figure.py"


rule pareto_figure:
    input:
        main="results/tables/main.csv",
        speed="results/tables/speed.csv",
    output:
        pdf="results/figures/pareto.pdf",
        png=report(
            "results/figures/pareto.png",
            caption="../report/fig_pareto.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/pareto.log",
    benchmark:
        "results/benchmarks/figures/pareto.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/figures/pareto_figure.py"


rule cost_figure:
    input:
        "results/tables/main.csv",
    output:
        pdf="results/figures/cost.pdf",
        png=report(
            "results/figures/cost.png",
            caption="../report/fig_cost.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/cost.log",
    benchmark:
        "results/benchmarks/figures/cost.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=runtime(10),
    script:
        "../scripts/figures/cost_figure.py"
