# Aligned static face images: masked appearance (SFA) and 15-region shape image (SFS).


rule static:
    input:
        video=video_path,
        faces="results/{ds}/faces/{video}.parquet",
    output:
        static="results/{ds}/static/{video}.h5",
    params:
        affpipe=AFFPIPE,
        settings=static_settings_json,
    priority: CHAIN_PRIORITY
    threads: config["threads"]["static"]
    log:
        "results/{ds}/logs/static/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/static/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} static --video {input.video:q} --faces {input.faces} "
        "--out {output.static} --settings {params.settings:q} 2> {log}"
