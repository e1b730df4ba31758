# Planning: a local checkpoint on the head node. Selects the items needing work
# from PostgreSQL, writes deterministic chunk manifests and plan.json, and
# records the chunks' job rows; chunk ids become the chunk rule's wildcards.


checkpoint plan:
    output:
        plan=f"{WORK}/runs/{{run}}/plan.json",
    log:
        f"{WORK}/runs/{{run}}/logs/plan.log",
    run:
        plan_checkpoint(CTX, wildcards.run, log[0])
