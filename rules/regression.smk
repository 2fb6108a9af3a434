# Sequence regression of valence/arousal from CNN features (DFM paper: BGRU), scoring and plots.
#   regress            one experiment: train on train, select on devel, predict every frame (settings: regression);
#                      with experiments.<name>.source: apply that dataset's trained experiment instead (its settings)
#   evaluate           every enabled experiment -> results/{ds}/ccc.json (settings: evaluate)
#   regression_report  traces, scatter plots and the CCC bar chart -> results/{ds}/report/regression/


wildcard_constraints:
    experiment=r"[A-Za-z0-9_.-]+",


rule regress:
    input:
        manifest=manifest_path,
        labels=labels_dir,
        features=regress_features,
        source=regress_source,
    output:
        predictions="results/{ds}/experiments/{experiment}/predictions.parquet",
        summary="results/{ds}/experiments/{experiment}/training.json",
    params:
        affpipe=AFFPIPE,
        settings=regression_settings_json,
        args=regress_args,
    threads: config["threads"]["regression"]
    resources:
        gpu=regress_gpus,
    log:
        "results/{ds}/logs/regress/{experiment}.log",
    benchmark:
        "results/{ds}/benchmarks/regress/{experiment}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} regress --manifest {input.manifest} --labels {input.labels} {params.args} "
        "--out {output.predictions} --summary {output.summary} --settings {params.settings:q} "
        "--threads {threads} 2> {log}"


rule evaluate:
    input:
        manifest=manifest_path,
        predictions=evaluate_predictions,
        faces=per_video("results/{ds}/faces/{video}.parquet"),
    output:
        ccc="results/{ds}/ccc.json",
    params:
        affpipe=AFFPIPE,
        settings=evaluate_settings_json,
        predictions=evaluate_predictions_args,
    log:
        "results/{ds}/logs/evaluate.log",
    benchmark:
        "results/{ds}/benchmarks/evaluate.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} evaluate --dataset {wildcards.ds} --manifest {input.manifest} "
        "--faces results/{wildcards.ds}/faces "
        "--predictions {params.predictions} --out {output.ccc} --settings {params.settings:q} 2> {log}"


rule regression_report:
    input:
        ccc="results/{ds}/ccc.json",
        predictions=evaluate_predictions,
    output:
        plots=report(
            directory("results/{ds}/report/regression"),
            patterns=["{name}.png"],
            caption="report/regression.rst",
            category="4. Results",
            subcategory="Figures",
            labels={"figure": "{name}"},
        ),
    params:
        affpipe=AFFPIPE,
        settings=evaluate_settings_json,
    log:
        "results/{ds}/logs/regression_report.log",
    benchmark:
        "results/{ds}/benchmarks/regression_report.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} regression-report --ccc {input.ccc} --out {output.plots} "
        "--settings {params.settings:q} 2> {log}"
