# Pictures and the per-dataset summary of every stage so far.


rule montage:
    input:
        static="results/{ds}/static/{video}.h5",
        dynamic="results/{ds}/dynamic/{video}.h5",
    output:
        montage=report("results/{ds}/report/montages/{video}.png", category="Dynamic facial model"),
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
        labels=per_video("results/{ds}/labels/{video}.parquet"),
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
