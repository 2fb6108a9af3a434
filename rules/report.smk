# Pictures, tables and the per-dataset summary of every stage so far. Report items (`snakemake
# --report`) are grouped in categories that follow the pipeline: 1. Tracking, 2. Static and dynamic
# images, 3. Dynamic representations, 4. Results, 5. Data quality; captions in rules/report/*.rst.
#   results_table  ccc.json -> results/{ds}/report/results.{md,tex,html} (paper-style tables)
#   quality_table  summary.json -> results/{ds}/report/quality.{md,html} (tracking and data quality)
#   dr_chart       ranking.json -> results/{ds}/report/dr_ranking.png


rule montage:
    input:
        static="results/{ds}/static/{video}.h5",
        dynamic="results/{ds}/dynamic/{video}.h5",
    output:
        montage=report(
            "results/{ds}/report/montages/{video}.png",
            caption="report/montage.rst",
            category="2. Static and dynamic images",
            labels={"video": "{video}"},
        ),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/montage/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/montage/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} show {input.static} {input.dynamic} --frame auto -o {output.montage} 2> {log}"


rule summary:
    input:
        unpack(report_pictures),
        manifest=manifest_path,
        labels=labels_dir,
        faces=per_video("results/{ds}/faces/{video}.parquet"),
        static=per_video("results/{ds}/static/{video}.h5"),
        dynamic=per_video("results/{ds}/dynamic/{video}.h5"),
    output:
        summary="results/{ds}/report/summary.json",
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/summary.log",
    benchmark:
        "results/{ds}/benchmarks/summary.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} summary --manifest {input.manifest} --results results/{wildcards.ds} "
        "--out {output.summary} 2> {log}"


rule results_table:
    input:
        ccc="results/{ds}/ccc.json",
    output:
        md=report("results/{ds}/report/results.md", caption="report/results_table.rst", category="4. Results",
                  subcategory="Tables", labels={"table": "results (Markdown)"}),
        tex=report("results/{ds}/report/results.tex", caption="report/results_table.rst", category="4. Results",
                   subcategory="Tables", labels={"table": "results (LaTeX booktabs)"}),
        html=report("results/{ds}/report/results.html", caption="report/results_table.rst", category="4. Results",
                    subcategory="Tables", labels={"table": "results"}),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/results_table.log",
    conda:
        ENV
    shell:
        "{params.affpipe} results-table --ccc {input.ccc} --md {output.md} --tex {output.tex} "
        "--html {output.html} 2> {log}"


rule quality_table:
    input:
        summary="results/{ds}/report/summary.json",
    output:
        md=report("results/{ds}/report/quality.md", caption="report/quality.rst", category="5. Data quality",
                  labels={"table": "data quality (Markdown)"}),
        html=report("results/{ds}/report/quality.html", caption="report/quality.rst", category="5. Data quality",
                    labels={"table": "data quality"}),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/quality_table.log",
    conda:
        ENV
    shell:
        "{params.affpipe} quality-table --summary {input.summary} --md {output.md} --html {output.html} 2> {log}"


rule dr_chart:
    input:
        ranking="results/{ds}/dr/ranking.json",
    output:
        chart=report("results/{ds}/report/dr_ranking.png", caption="report/dr_ranking.rst",
                     category="3. Dynamic representations", labels={"figure": "ranking accuracy"}),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/dr_chart.log",
    conda:
        ENV
    shell:
        "{params.affpipe} dr-chart --ranking {input.ranking} -o {output.chart} 2> {log}"
