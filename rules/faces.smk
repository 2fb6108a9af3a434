# Face detection and 68-point landmark tracking, one job per video.


rule faces:
    input:
        video=video_path,
    output:
        faces="results/{ds}/faces/{video}.parquet",
    params:
        affpipe=AFFPIPE,
        settings=faces_settings_json,
        side=video_side_arg,
    priority: CHAIN_PRIORITY
    threads: config["threads"]["faces"]
    log:
        "results/{ds}/logs/faces/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/faces/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} faces --video {input.video:q} --out {output.faces} {params.side} "
        "--settings {params.settings:q} --threads {threads} 2> {log}"


rule faces_sheet:
    input:
        video=video_path,
        faces="results/{ds}/faces/{video}.parquet",
    output:
        sheet=report(
            "results/{ds}/report/faces/{video}.png",
            caption="report/tracking.rst",
            category="1. Tracking",
            labels={"video": "{video}"},
        ),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/faces_sheet/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/faces_sheet/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} show-faces --video {input.video:q} --faces {input.faces} "
        "-o {output.sheet} 2> {log}"
