# Dynamic representations inferred from still images (DR paper): one UNet per window half-length T,
# trained self-supervised with the rank loss on a dataset's train partition; its ranking accuracy on
# unseen videos against the per-window RankSVM upper bound; and the DRs of every configured T for
# every valid frame of every video (results/{ds}/dr/videos/{video}.h5, one job per dataset: torch and
# the models load once), which with the SFA form the 9-channel MDR input [image, DR_T3, DR_T5].
# A dataset uses the models of `dr.source` (default: itself), e.g. datasets.semaine.dr.source: recola.


rule dr_train:
    input:
        manifest=manifest_path,
        static=dr_train_static,
    output:
        model="results/{ds}/dr/model_T{T}.pt",
    wildcard_constraints:
        T=r"\d+",
    params:
        affpipe=AFFPIPE,
        retrain=dr_retrain_settings_json,
        settings=dr_train_settings_json,
    priority: CHAIN_PRIORITY
    threads: config["threads"]["dr_train"]
    resources:
        gpu=dr_gpus,
    log:
        "results/{ds}/logs/dr/train_T{T}.log",
    benchmark:
        "results/{ds}/benchmarks/dr/train_T{T}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} dr-train --manifest {input.manifest} --static-dir results/{wildcards.ds}/static "
        "--T {wildcards.T} --out {output.model} --settings {params.settings:q} --threads {threads} 2> {log}"


rule dr_rank:
    input:
        manifest=manifest_path,
        static=dr_rank_static,
        models=dr_models,
    output:
        ranking="results/{ds}/dr/ranking.json",
    params:
        affpipe=AFFPIPE,
        settings=dr_settings_json,
    threads: config["threads"]["dr_infer"]
    resources:
        gpu=dr_gpus,
    log:
        "results/{ds}/logs/dr/ranking.log",
    benchmark:
        "results/{ds}/benchmarks/dr/ranking.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} dr-rank --models {input.models} --manifest {input.manifest} "
        "--static-dir results/{wildcards.ds}/static --out {output.ranking} --settings {params.settings:q} "
        "--threads {threads} 2> {log}"


rule dr_infer:
    input:
        manifest=manifest_path,
        static=per_video("results/{ds}/static/{video}.h5"),
        models=dr_models,
    output:
        dr=directory("results/{ds}/dr/videos"),
    params:
        affpipe=AFFPIPE,
        settings=dr_settings_json,
    priority: CHAIN_PRIORITY
    threads: config["threads"]["dr_infer"]
    resources:
        gpu=dr_gpus,
    log:
        "results/{ds}/logs/dr/infer.log",
    benchmark:
        "results/{ds}/benchmarks/dr/infer.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} dr-infer --models {input.models} --manifest {input.manifest} "
        "--static-dir results/{wildcards.ds}/static --out-dir {output.dr} --settings {params.settings:q} "
        "--threads {threads} 2> {log}"


rule dr_montage:
    input:
        static="results/{ds}/static/{video}.h5",
        dr="results/{ds}/dr/videos",
    output:
        montage=report(
            "results/{ds}/report/dr/{video}.png",
            caption="report/dr_montage.rst",
            category="3. Dynamic representations",
            labels={"video": "{video}"},
        ),
    params:
        affpipe=AFFPIPE,
    log:
        "results/{ds}/logs/dr_montage/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/dr_montage/{video}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} show {input.static} {input.dr}/{wildcards.video}.h5 --frame auto -o {output.montage} 2> {log}"
