# Per-frame CNN (DFM paper §4; VGG-16 fc6 features): train on one input representation (sfa, sfs, dfa,
# dfs, dfm, mdr, or a two-branch pair such as dfa+dfs) with model selection on devel, then extract
# features and the CNN's own per-frame valence/arousal for every video (one job per input: torch and the
# model load once, not once per video; a retrained model re-runs its own input only). Settings: section `cnn`. With
# cnn.mode: pretrained, cnn_train trains nothing (model.pt = cnn.weights as given) and the features are
# the weights' fc6 (no `pred`).
#   cnn_features_from  another dataset's trained CNN extracts this dataset's features, for experiments applied
#                      from it (experiments.<name>.source): results/{ds}/features_from/{src}/{input}


wildcard_constraints:
    input=r"[a-z0-9]+(\+[a-z0-9]+)?",


rule cnn_train:
    input:
        manifest=manifest_path,
        labels=labels_dir,
        stores=cnn_train_stores,
        weights=cnn_weights,
    output:
        model="results/{ds}/cnn/{input}/model.pt",
    params:
        affpipe=AFFPIPE,
        rerun=cnn_rerun_settings_json,
        settings=cnn_settings_json,
        stores=cnn_store_args,
    priority: cnn_priority
    threads: config["threads"]["cnn"]
    resources:
        gpu=cnn_gpus,
    log:
        "results/{ds}/logs/cnn_train/{input}.log",
    benchmark:
        "results/{ds}/benchmarks/cnn_train/{input}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} cnn-train --input {wildcards.input:q} --manifest {input.manifest} "
        "--labels {input.labels} {params.stores} --out {output.model} "
        "--settings {params.settings:q} --threads {threads} 2> {log}"


rule cnn_features:
    input:
        manifest=manifest_path,
        model=cnn_model,
        stores=cnn_features_stores,
    output:
        features=directory("results/{ds}/features/{input}"),
    params:
        affpipe=AFFPIPE,
        rerun=cnn_rerun_settings_json,
        settings=cnn_settings_json,
        stores=cnn_store_args,
    priority: cnn_priority
    threads: config["threads"]["cnn_features"]
    resources:
        gpu=cnn_gpus,
    log:
        "results/{ds}/logs/cnn_features/{input}.log",
    benchmark:
        "results/{ds}/benchmarks/cnn_features/{input}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} cnn-features --model {input.model} --manifest {input.manifest} {params.stores} "
        "--out-dir {output.features} --settings {params.settings:q} --threads {threads} 2> {log}"


rule cnn_features_from:
    input:
        manifest=manifest_path,
        model=cnn_source_model,
        stores=cnn_source_features_stores,
    output:
        features=directory("results/{ds}/features_from/{src}/{input}"),
    params:
        affpipe=AFFPIPE,
        settings=cnn_source_settings_json,
        stores=cnn_source_store_args,
    threads: config["threads"]["cnn_features"]
    resources:
        gpu=cnn_source_gpus,
    log:
        "results/{ds}/logs/cnn_features_from/{src}/{input}.log",
    benchmark:
        "results/{ds}/benchmarks/cnn_features_from/{src}/{input}.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} cnn-features --model {input.model} --manifest {input.manifest} {params.stores} "
        "--out-dir {output.features} --settings {params.settings:q} --threads {threads} 2> {log}"
