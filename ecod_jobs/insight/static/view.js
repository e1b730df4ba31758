// ecod-jobs: draws a batch view (the JSON of /api/batches/{id}, or the report's
// embedded copy) and the batch list. Used by the offline report and the dashboard.
// Every text from the database goes in with textContent, never as HTML.
"use strict";

const ECOD = (() => {
  const STATUSES = ["pending", "processing", "success", "error", "skipped"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const num = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
  const secs = (s) => {
    if (s === null || s === undefined) return "-";
    if (s < 120) return `${Number(s).toFixed(1)} s`;
    const t = Math.round(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), r = t % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`;
  };
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "-");

  function table(id, columns, rows, empty) {
    if (!rows.length) return el("p", { id, class: "empty" }, empty);
    const head = el("tr", {}, ...columns.map(([title]) => el("th", {}, title)));
    const body = rows.map((row) => el("tr", {}, ...columns.map(([, cell]) => el("td", {}, cell(row)))));
    return el("table", { id }, el("thead", {}, head), el("tbody", {}, ...body));
  }

  function progressBar(id, fraction, label) {
    return el(
      "div",
      { class: "progress" },
      el("progress", { id, max: 1, value: fraction }),
      el("span", { id: id && `${id}-text` }, label)
    );
  }

  function progressLabel(v) {
    return `${num(v.finished)} of ${num(v.total)} items finished (${v.progress_percent}%),` +
      ` ${num(v.by_status.error)} failed`;
  }

  function section(title, ...children) {
    return el("section", {}, el("h2", {}, title), ...children);
  }

  // "stages" stays an empty div for a batch that never ran a pipeline: its page looks as before.
  const SECTIONS = ["summary", "stages", "plots", "resources", "slowest", "failures", "jobs", "runs"];

  function skeleton(root) {
    root.replaceChildren();
    const parts = {};
    for (const name of SECTIONS) {
      parts[name] = el("div", { id: `section-${name}` });
      root.append(parts[name]);
    }
    parts.plots.append(
      section(
        "Plots",
        el("div", { id: "fig-timeline", class: "figure" }),
        el("div", { class: "pair" },
          el("div", { id: "fig-runtime", class: "figure" }),
          el("div", { id: "fig-memory", class: "figure" }))
      )
    );
    return parts;
  }

  function summary(v) {
    const b = v.batch;
    const counts = STATUSES.concat(Object.keys(v.by_status).filter((s) => !STATUSES.includes(s)));
    return el(
      "div",
      {},
      el("h1", { id: "batch-title" }, `Batch ${b.id}: `, el("span", { id: "batch-name" }, b.name)),
      el("p", { class: "meta" },
        `${b.type} · status ${b.status} · reference ${b.ref_version} · created ${when(b.created_at)}`,
        v.active ? el("span", { class: "live", id: "live" }, "run in progress") : null),
      progressBar("progress", v.progress, progressLabel(v)),
      el("table", { id: "counts", class: "counts" },
        el("tr", {}, ...counts.map((s) => el("th", {}, s))),
        el("tr", {}, ...counts.map((s) => el("td", { id: `count-${s}` }, num(v.by_status[s]))))),
      el("p", { class: "meta", id: "job-counts" },
        `chunk jobs: ${num(v.job_counts.submitted)} running or queued, ${num(v.job_counts.completed)}` +
        ` completed, ${num(v.job_counts.failed)} failed` +
        (v.jobs_shown >= v.jobs_limit ? ` (plots show the latest ${num(v.jobs_limit)})` : ""))
    );
  }

  // Per-stage progress of pipeline runs: a table per pipeline and its graph, whose
  // layout (boxes, text lines, bar segments, edge paths) comes laid out from the server.
  const STAGE_STATUSES = ["pending", "running", "success", "error", "skipped"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function stackBar(s) {
    const bar = el("div", { class: "stackbar", title: STAGE_STATUSES.map((k) => `${num(s.counts[k])} ${k}`).join(", ") });
    for (const k of ["success", "error", "skipped", "running", "pending"]) {
      if (!s.counts[k] || !s.total) continue;
      const seg = el("span", { class: `seg-${k}` });
      seg.style.width = `${(100 * s.counts[k]) / s.total}%`;
      bar.append(seg);
    }
    return bar;
  }

  function stageTable(id, stages, defined) {
    const columns = [["stage", (s) => s.name]];
    if (defined) {
      columns.push(["job type", (s) => s.job_type], ["after", (s) => (s.after.length ? s.after.join(", ") : "-")],
        ["when", (s) => s.when || "-"]);
    }
    const table = el("table", { id, class: "stages" },
      el("thead", {}, el("tr", {}, ...columns.map(([t]) => el("th", {}, t)),
        ...STAGE_STATUSES.map((k) => el("th", { class: "n" }, k)), el("th", {}, "progress"))),
      el("tbody", {}, ...stages.map((s) => el("tr", { "data-stage": s.name },
        ...columns.map(([, cell]) => el("td", {}, cell(s))),
        ...STAGE_STATUSES.map((k) => el("td", { class: "n", "data-status": k }, num(s.counts[k]))),
        el("td", {}, stackBar(s), el("span", { class: "note" },
          ` ${num(s.finished)} of ${num(s.total)} finished`))))));
    return table;
  }

  function stageGraph(p) {
    const g = p.graph;
    const root = svg("svg", { id: `graph-${p.name}`, class: "pipeline-graph", width: g.width, height: g.height,
      viewBox: `0 0 ${g.width} ${g.height}`, role: "img", "data-pipeline": p.name,
      "aria-label": `pipeline ${p.name}: its stages, each after the stages it waits for` });
    for (const e of g.edges) {
      root.append(svg("g", { class: "stage-edge", "data-from": e.from, "data-to": e.to },
        svg("title", { text: `${e.from} -> ${e.to}` }),
        svg("path", { d: e.path }), svg("polygon", { points: e.arrow })));
    }
    for (const n of g.nodes) {
      const node = svg("g", { class: n.failed ? "stage-node failed" : "stage-node", "data-stage": n.stage,
        transform: `translate(${n.x},${n.y})` },
        svg("title", { text: n.lines.map((l) => l.text).join("\n") }),
        svg("rect", { class: "box", width: n.w, height: n.h, rx: 6 }));
      for (const line of n.lines) {
        node.append(svg("text", { x: n.bar.x, y: line.y, class: line.bold ? "name" : "counts", text: line.text }));
      }
      node.append(svg("rect", { class: "track", x: n.bar.x, y: n.bar.y, width: n.bar.w, height: n.bar.h }));
      for (const seg of n.segments) {
        node.append(svg("rect", { class: `seg seg-${seg.status}`, x: seg.x, y: n.bar.y, width: seg.w,
          height: n.bar.h, fill: seg.colour }, svg("title", { text: `${num(seg.count)} ${seg.status}` })));
      }
      root.append(node);
    }
    return el("div", { class: "graph" }, root);
  }

  function stages(v) {
    const sv = v.stages, parts = [];
    for (const p of sv.pipelines) {
      parts.push(el("h3", {}, `Pipeline ${p.name}`),
        p.description ? el("p", { class: "meta" }, p.description) : null,
        stageTable(`stages-${p.name}`, p.stages, true), stageGraph(p));
    }
    if (sv.pipelines.length) {
      parts.push(el("p", { class: "note legend" }, "Bars: ",
        ...["success", "error", "skipped", "running", "pending"].map((k) =>
          el("span", {}, el("i", { class: `swatch seg-${k}` }), k))));
    }
    if (sv.unconfigured.length || sv.other_stages.length) {
      parts.push(el("h3", {}, sv.pipelines.length ? "Other stages" : "Stages"),
        sv.unconfigured.length
          ? el("p", { class: "note", id: "stages-unconfigured" }, `The batch ran pipeline ${sv.unconfigured.join(", ")},` +
            " which the config given to ecod-jobs does not define: no graph, its stages by name.")
          : null,
        stageTable("stages-other", sv.other_stages, false));
    }
    return section("Pipeline stages", ...parts);
  }

  function resources(v) {
    const r = v.resources, rt = r.runtime, mem = r.memory;
    const row = (what, x, fmt) => [what, fmt(x.median), fmt(x.p95), fmt(x.max), fmt(x.requested),
      x.killed ? `${x.killed} chunks killed` : "", x.suggested_text || "-"];
    const mb = (x) => (x === null || x === undefined ? "-" : `${num(Math.round(x))} MB`);
    const rows = [row("runtime", rt, secs), row("peak memory", mem, mb)];
    return section(
      "Requests against use",
      table("resources", [["", (x) => x[0]], ["median", (x) => x[1]], ["95th percentile", (x) => x[2]],
        ["max", (x) => x[3]], ["requested", (x) => x[4]], ["", (x) => x[5]], ["suggested next run", (x) => x[6]]],
      rows, ""),
      el("p", { class: "note" }, "Suggested: largest peak memory x 1.25 (rounded up to 256 MB) and longest" +
        " chunk x 1.5 (rounded up to a minute), from completed chunks; at least twice a request that" +
        " SLURM killed for time or memory.")
    );
  }

  function slowest(v) {
    const parts = [
      el("h3", {}, "Chunks"),
      table("slowest-chunks", [["chunk", (j) => j.chunk_id], ["attempt", (j) => j.attempt],
        ["node", (j) => j.node || "-"], ["items", (j) => num(j.items)], ["runtime", (j) => secs(j.elapsed_seconds)],
        ["peak memory", (j) => (j.max_rss_mb === null ? "-" : `${num(j.max_rss_mb)} MB`)],
        ["status", (j) => j.status]], v.slowest_chunks, "No chunk has finished yet."),
    ];
    if (v.slowest_items) {
      parts.push(el("h3", {}, "Items"),
        table("slowest-items", [["item", (i) => i.process_id], ["path", (i) => i.path],
          ["runtime", (i) => secs(i.seconds)], ["status", (i) => i.status], ["chunk", (i) => i.chunk_id],
          ["node", (i) => i.node || "-"]], v.slowest_items, "No item has finished yet."));
    }
    return section("Slowest", ...parts);
  }

  // On the dashboard (links): an item's id leads to its attempts and output.
  const itemHref = (batchId, pid, params) => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") query.set(key, value);
    }
    const search = query.toString();
    return `/batches/${encodeURIComponent(batchId)}/items/${encodeURIComponent(pid)}/log${search ? `?${search}` : ""}`;
  };

  function failures(v, links) {
    const f = v.failures;
    const item = (pid) => (links ? el("a", { class: "item-log", href: itemHref(v.batch.id, pid) }, pid) : pid);
    const paths = (g) => el("ul", { class: "paths" }, ...g.items.map((i) => el("li", {}, item(i.process_id), ` ${i.path}`)));
    return section(
      `Failed items (${num(f.failed)})`,
      f.sampled < f.failed ? el("p", { class: "note" }, `Grouped from the first ${num(f.sampled)} failed items.`) : null,
      table("failure-groups", [["items", (g) => num(g.count)], ["error", (g) => g.error || "(no message)"],
        ["stage", (g) => g.stage], ["examples", paths]], f.groups, "No failed items."),
      v.failed_items && v.failed_items.length
        ? el("details", {}, el("summary", {}, `The first ${v.failed_items.length} failed items`),
          table("failed-items", [["item", (i) => item(i.process_id)], ["path", (i) => i.path],
            ["error", (i) => i.error || ""], ["when", (i) => when(i.updated_at)]], v.failed_items, ""))
        : null
    );
  }

  function jobs(v) {
    return section(
      `Chunk jobs (latest ${v.jobs.length})`,
      table("jobs", [["chunk", (j) => j.chunk_id], ["attempt", (j) => j.attempt], ["status", (j) => j.status],
        ["scheduler", (j) => j.scheduler_state || "-"], ["SLURM id", (j) => j.slurm_job_id || "-"],
        ["node", (j) => j.node || "-"], ["items", (j) => num(j.items)], ["start", (j) => when(j.start)],
        ["runtime", (j) => secs(j.elapsed_seconds)], ["error", (j) => j.error || ""]],
      v.jobs.slice().reverse(), "No chunk jobs yet.")
    );
  }

  function runs(v) {
    return section(
      "Runs",
      table("runs", [["run", (r) => r.run_id], ["job type", (r) => r.job_type], ["status", (r) => (r.live ? "running" : r.status)],
        ["who", (r) => r.username || "-"], ["host", (r) => r.host || "-"], ["profile", (r) => r.profile || "-"],
        ["started", (r) => when(r.started_at)], ["ended", (r) => when(r.ended_at)],
        ["items", (r) => num(r.planned_items)], ["chunks", (r) => num(r.planned_chunks)],
        ["config hash", (r) => (r.config_hash || "-").slice(0, 12)],
        ["versions", (r) => `ecod-jobs ${r.ecod_jobs_version || "?"}, snakemake ${r.snakemake_version || "?"}`],
        ["message", (r) => r.message || ""]], v.runs, "No runs yet.")
    );
  }

  const PLOT_CONFIG = { displaylogo: false, responsive: true };

  function draw(parts, v, links) {
    parts.summary.replaceChildren(summary(v));
    parts.stages.replaceChildren(...(v.stages ? [stages(v)] : []));
    parts.resources.replaceChildren(resources(v));
    parts.slowest.replaceChildren(slowest(v));
    parts.failures.replaceChildren(failures(v, links));
    parts.jobs.replaceChildren(jobs(v));
    parts.runs.replaceChildren(runs(v));
    if (window.Plotly) {
      for (const [name, fig] of Object.entries(v.figures || {})) {
        window.Plotly.react(`fig-${name}`, fig.data, fig.layout, PLOT_CONFIG);
      }
    }
  }

  /** The report: one view, drawn once. */
  function renderReport(root, v) {
    draw(skeleton(root), v);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  function setStatus(text, error) {
    const status = document.getElementById("refresh-status");
    if (status) {
      status.textContent = text;
      status.className = error ? "error" : "";
    }
  }

  // Refresh periods: a live run every 2 s; otherwise every 5 s, so a run that starts is seen soon.
  const LIVE_MS = 2000, IDLE_MS = 5000;

  /** The dashboard's batch page, redrawn by itself. */
  async function watchBatch(root, batchId) {
    let parts = null;
    for (;;) {
      let delay = IDLE_MS;
      try {
        const v = await getJSON(`/api/batches/${encodeURIComponent(batchId)}`);
        if (!parts) parts = skeleton(root);
        draw(parts, v, true);
        document.title = `ecod-jobs: batch ${v.batch.id} ${v.batch.name}`;
        delay = v.active ? LIVE_MS : IDLE_MS;
        setStatus(`updated ${new Date().toLocaleTimeString()}; ` +
          (v.active ? "a run is live: refreshing every 2 s" : "no live run: refreshing every 5 s"));
      } catch (err) {
        setStatus(`could not refresh: ${err.message}`, true);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  /** The dashboard's front page: every batch with its progress. */
  async function watchBatches(root) {
    for (;;) {
      let delay = IDLE_MS;
      try {
        const { batches } = await getJSON("/api/batches");
        root.replaceChildren(
          el("h1", {}, "Batches"),
          table("batches", [
            ["id", (b) => el("a", { href: `/batches/${b.id}` }, b.id)],
            ["name", (b) => el("a", { href: `/batches/${b.id}` }, b.name)],
            ["type", (b) => b.type], ["status", (b) => (b.active ? "running" : b.status)],
            ["progress", (b) => progressBar(`progress-${b.id}`, b.progress, progressLabel(b))],
          ], batches, "No batches yet: ecod-jobs batch create registers one.")
        );
        if (batches.some((b) => b.active)) delay = LIVE_MS;
        setStatus(`updated ${new Date().toLocaleTimeString()}`);
      } catch (err) {
        setStatus(`could not refresh: ${err.message}`, true);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // One item's attempts and output (``ecod-jobs logs``): drawn once, from
  // /api/batches/{id}/items/{pid}/log with the page's own query (stage, attempt, full).
  function streamAbout(s, full, tailLines) {
    let what;
    if (s.missing) what = s.missing + (s.text ? "; the record's copy of its end follows" : "");
    else if (s.total_bytes === null) what = s.note || "from the record";
    else if (s.total_bytes === 0) what = "empty";
    else if (s.complete) what = `all ${num(s.total_bytes)} bytes`;
    else if (full) what = `the first ${num(s.shown_bytes)} of ${num(s.total_bytes)} bytes`;
    else what = `the last ${tailLines} lines of ${num(s.total_bytes)} bytes`;
    if (s.note && s.total_bytes !== null) what += ` (${s.note})`;
    return what;
  }

  function itemLogView(r, params) {
    const a = r.attempt, full = params.get("full") === "1";
    const here = (extra) => itemHref(r.batch_id, r.process_id, { stage: r.stage, attempt: a.number, ...extra });
    const fact = (label, value) => el("tr", {}, el("th", {}, label), el("td", { "data-field": label }, value));
    const facts = el("table", { id: "attempt-facts" },
      fact("command", a.command === null ? `(none: ${a.note || "not known"})` : el("code", { id: "command" }, a.command)),
      fact("status", a.status), fact("exit code", a.exit_code === null ? "-" : a.exit_code),
      fact("error", a.error || "-"), fact("node", a.node || "-"), fact("SLURM id", a.slurm_job_id || "-"),
      fact("chunk", `${a.chunk_id}, its attempt ${a.chunk_attempt}`), fact("run", a.run_id),
      fact("started", when(a.start)), fact("ended", when(a.end)), fact("runtime", secs(a.seconds)),
      fact("log", a.log_path || "-"));
    const streams = ["stdout", "stderr"].map((name) => {
      const s = a[name];
      return section(name,
        el("p", { class: "note", id: `${name}-about` }, streamAbout(s, full, r.tail_lines),
          !s.complete && s.total_bytes ? el("a", { href: here({ full: 1 }), class: "full-log" }, " show all") : null),
        s.text ? el("pre", { id: name, class: "log" }, s.text) : null);
    });
    const what = r.pipeline ? `stage ${r.stage}` : `job type ${r.stage}`;
    const stages = r.pipeline || r.stages.length > 1
      ? el("p", { class: "meta", id: "stages" }, "Stages: ", ...r.stages.flatMap((s, i) => [
        i ? "; " : "",
        s.runs ? el("a", { href: itemHref(r.batch_id, r.process_id, { stage: s.name }) }, s.name) : s.name,
        ` ${s.status}`, !s.runs && s.detail ? ` (${s.detail})` : ""]))
      : null;
    return [
      el("h1", {}, `Item ${r.process_id} of `, el("a", { href: `/batches/${r.batch_id}` }, `batch ${r.batch_id}`)),
      el("p", { class: "meta" }, `${r.path} · status ${r.item_status} · ${what}: attempt ${a.number} of ${r.attempts.length}`),
      stages,
      facts,
      ...streams,
      section("Attempts",
        table("attempts", [
          ["#", (x) => (x.number === a.number ? el("strong", {}, x.number)
            : el("a", { href: itemHref(r.batch_id, r.process_id, { stage: r.stage, attempt: x.number }) }, x.number))],
          ["status", (x) => x.status], ["exit", (x) => (x.exit_code === null ? "-" : x.exit_code)],
          ["run", (x) => x.run_id], ["chunk", (x) => x.chunk_id], ["chunk attempt", (x) => x.chunk_attempt],
          ["node", (x) => x.node || "-"], ["SLURM id", (x) => x.slurm_job_id || "-"],
          ["started", (x) => when(x.start)], ["error", (x) => x.error || ""]],
        r.attempts, "No attempts.")),
    ];
  }

  async function showItemLog(root, batchId, itemId, params) {
    const query = new URLSearchParams();
    for (const key of ["stage", "attempt", "full"]) if (params.get(key)) query.set(key, params.get(key));
    const url = `/api/batches/${encodeURIComponent(batchId)}/items/${encodeURIComponent(itemId)}/log` +
      (query.toString() ? `?${query}` : "");
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) {
        root.replaceChildren(el("h1", {}, `Item ${itemId} of batch ${batchId}`),
          el("p", { class: "error", id: "log-error" }, body.error || `HTTP ${response.status}`));
        setStatus(`HTTP ${response.status}`, true);
        return;
      }
      root.replaceChildren(...itemLogView(body, params).filter((part) => part !== null));
      document.title = `ecod-jobs: item ${body.process_id} of batch ${body.batch_id}`;
      setStatus(`read ${new Date().toLocaleTimeString()}; reload for newer`);
    } catch (err) {
      setStatus(`could not read: ${err.message}`, true);
    }
  }

  return { renderReport, watchBatch, watchBatches, showItemLog };
})();
