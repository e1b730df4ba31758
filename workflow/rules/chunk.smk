# One job per chunk: every item of the manifest through the job type's command.
# Item failures are recorded in the result file; the job fails only when the
# chunk as a whole does (time limit, memory, cancel, node failure).


rule chunk:
    input:
        plan=f"{WORK}/runs/{{run}}/plan.json",
    output:
        result=f"{WORK}/runs/{{run}}/results/{{chunk}}.jsonl",
    log:
        f"{WORK}/runs/{{run}}/logs/{{chunk}}.runner.log",
    params:
        python=PYTHON,
        run_dir=lambda wildcards: f"{WORK}/runs/{wildcards.run}",
    wildcard_constraints:
        chunk=r"c[0-9]+",
    threads: CTX.spec.threads
    resources:
        **chunk_resources(),
    shell:
        "{params.python:q} -m ecod_jobs.chunk_runner --run-dir {params.run_dir:q} --chunk {wildcards.chunk} 2> {log:q}"
