# A pipeline run (--config pipeline=NAME): a graph of stages per item, pipelined by windows.
#
# pipeline_plan (checkpoint) -> per stage and window: select (checkpoint: which items run,
# in which chunks) -> stage_chunk (one job per chunk; SLURM arrays per stage) -> collect
# (the stage's outcome per item, read by the downstream stages' select). A window of a
# stage waits only for the same window of its upstream stages, so downstream chunks
# start while other windows are still upstream. See ecod_jobs/pipeline_plan.py.


checkpoint pipeline_plan:
    output:
        plan=f"{WORK}/runs/{{run}}/pipeline.json",
    log:
        f"{WORK}/runs/{{run}}/logs/pipeline_plan.log",
    run:
        pipeline_plan_checkpoint(CTX, wildcards.run, log[0])


checkpoint select:
    input:
        plan=f"{WORK}/runs/{{run}}/pipeline.json",
        upstream=upstream_outcomes,
    output:
        plan=f"{WORK}/runs/{{run}}/stages/{{stage}}/{{window}}/plan.json",
    log:
        f"{WORK}/runs/{{run}}/logs/select.{{stage}}.{{window}}.log",
    wildcard_constraints:
        window=r"w[0-9]+",
    run:
        select_checkpoint(CTX, wildcards.run, wildcards.stage, wildcards.window, log[0])


rule stage_chunk:
    input:
        plan=f"{WORK}/runs/{{run}}/stages/{{stage}}/{{window}}/plan.json",
    output:
        result=f"{WORK}/runs/{{run}}/stages/{{stage}}/{{window}}/results/{{chunk}}.jsonl",
    log:
        f"{WORK}/runs/{{run}}/stages/{{stage}}/{{window}}/logs/{{chunk}}.runner.log",
    params:
        python=PYTHON,
        run_dir=lambda wildcards: f"{WORK}/runs/{wildcards.run}/stages/{wildcards.stage}/{wildcards.window}",
    wildcard_constraints:
        window=r"w[0-9]+",
        chunk=r"[A-Za-z0-9_]+\.w[0-9]+\.c[0-9]+",
    threads: stage_threads
    resources:
        **stage_resources(),
    shell:
        "{params.python:q} -m ecod_jobs.chunk_runner --run-dir {params.run_dir:q} --chunk {wildcards.chunk} 2> {log:q}"


rule collect:
    input:
        results=stage_window_results,
    output:
        outcome=f"{WORK}/runs/{{run}}/stages/{{stage}}/{{window}}.outcome.jsonl",
    log:
        f"{WORK}/runs/{{run}}/logs/collect.{{stage}}.{{window}}.log",
    wildcard_constraints:
        window=r"w[0-9]+",
    run:
        collect_window(CTX.batch_layout.run(wildcards.run), wildcards.stage, wildcards.window, log[0])
