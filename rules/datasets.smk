# Dataset adapters: the manifest (one row per video) and per-video labels on the video's frame times.


checkpoint manifest:
    input:
        unpack(manifest_inputs),
    output:
        manifest="results/{ds}/manifest.parquet",
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
        "--max-frame-shortfall {params.shortfall} --out {output.manifest} 2> {log}"


rule labels:
    input:
        manifest=manifest_path,
    output:
        labels="results/{ds}/labels/{video}.parquet",
    params:
        affpipe=AFFPIPE,
        settings=dataset_settings_json,
    log:
        "results/{ds}/logs/labels/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/labels/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} labels --manifest {input.manifest} --video {wildcards.video} "
        "--settings {params.settings:q} --out {output.labels} 2> {log}"
