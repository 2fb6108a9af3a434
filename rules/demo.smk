# The embedded demo dataset: real face photographs animated with known valence/arousal traces.
# Any dataset entry with `generated: true` gets its tree from this rule (settings: `demo` section,
# overridable per dataset under `datasets.<name>.demo`).


rule demo_data:
    output:
        tree=directory("results/{ds}/raw"),
    params:
        affpipe=AFFPIPE,
        settings=demo_settings_json,
    threads: config["threads"]["demo"]
    log:
        "results/{ds}/logs/demo_data.log",
    benchmark:
        "results/{ds}/benchmarks/demo_data.tsv"
    conda:
        ENV
    shell:
        "{params.affpipe} demo --settings {params.settings:q} --out {output.tree} --threads {threads} 2> {log}"
