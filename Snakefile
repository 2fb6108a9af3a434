# affpipe: face videos -> landmarks -> static/dynamic facial images -> features -> valence/arousal.
#
#   snakemake --cores 2 results/demo/ccc.json     # the embedded demo, end to end
#   snakemake --cores 32 results/semaine/ccc.json --config 'datasets={semaine: {root: /data/AVEC2012}}'
#
# Rules are thin: each calls `python -m affpipe <command>`; see README.md and docs/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "workflow_config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/datasets.smk"
include: "rules/faces.smk"
include: "rules/static.smk"
include: "rules/dynamic.smk"
include: "rules/dr.smk"
include: "rules/cnn.smk"
include: "rules/regression.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/demo/ccc.json",
        "results/demo/report/regression",
        "results/demo/report/summary.json",
        "results/demo/dr/ranking.json",
        "results/demo/report/results.md",
        "results/demo/report/quality.html",
        "results/demo/report/dr_ranking.png",
        # the demo's models applied to unlabelled videos (datasets.demo_unlabelled): predictions only
        "results/demo_unlabelled/ccc.json",
        "results/demo_unlabelled/report/regression",
        "results/demo_unlabelled/report/summary.json",
        "results/demo_unlabelled/report/results.md",
