# Per-window RankSVM dynamic images of SFA and SFS (DFA, DFS), stable/dynamic masks and the DFM.


rule dynamic:
    input:
        static="results/{ds}/static/{video}.h5",
    output:
        dynamic="results/{ds}/dynamic/{video}.h5",
    params:
        affpipe=AFFPIPE,
        settings=dynamic_settings_json,
    threads: config["threads"]["dynamic"]
    log:
        "results/{ds}/logs/dynamic/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/dynamic/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} dynamic --static {input.static} --out {output.dynamic} "
        "--settings {params.settings:q} --threads {threads} 2> {log}"
