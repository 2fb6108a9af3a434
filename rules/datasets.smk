# Dataset adapters: the manifest (one row per video) and, written by the same job, every video's labels
# on its frame times (the manifest's pre-flight builds them anyway; one job instead of one per video).


checkpoint manifest:
    input:
        unpack(manifest_inputs),
    output:
        manifest="results/{ds}/manifest.parquet",
        labels=directory("results/{ds}/labels"),
    params:
        affpipe=AFFPIPE,
        settings=dataset_settings_json,
        shortfall=manifest_max_frame_shortfall,
    log:
        "results/{ds}/logs/manifest.log",
    benchmark:
        "results/{ds}/benchmarks/manifest.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} manifest --dataset {wildcards.ds} --settings {params.settings:q} "
        "--max-frame-shortfall {params.shortfall} --out {output.manifest} --labels-dir {output.labels} 2> {log}"

