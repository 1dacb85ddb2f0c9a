// sds ui: a run's page. Draws from /api/run/ID and polls it while the run is running.
"use strict";
(() => {
  const root = document.getElementById("run");
  const id = root.dataset.run;
  const STATUS_COLOR = {passed: "#2e8b57", failed: "#c0392b", rejected: "#d68910", timeout: "#7d3c98",
                        crashed: "#922b21", duplicate: "#b9770e", pending: "#5d8fd6", running: "#2a62c9"};
  let timer = null;

  function render(d) {
    const c = d.card, s = d.summary, cv = d.curve;
    const set = (f, v) => { const e = root.querySelector(`[data-f="${f}"]`); if (e) e.textContent = v; };
    set("best", sds.fmt(c.best)); set("seed", sds.fmt(c.seed)); set("fidelity", c.fidelity || "–");
    set("evaluations", `${c.evaluations} / ${sds.fmt(c.budget)}`); set("runtimes", c.runtimes);
    set("llm_usd", `${c.llm_usd.toFixed(3)} / ${sds.fmt(c.max_llm_usd)}`);
    set("gpu_s", `${c.gpu_s.toFixed(0)} / ${sds.fmt(c.max_gpu_s)}`);
    set("wall_s", `${c.wall_s.toFixed(0)} / ${sds.fmt(c.max_wall_s)}`);
    const st = document.querySelector("#run-status .st");
    st.textContent = c.status; st.className = "st st-" + c.status;
    root.dataset.status = c.status;
    const label = `${c.metric} (${c.higher ? "max" : "min"})`;
    const pts = (k) => cv.points.map(p => [p[k], p[2]]);
    sdsChart.lines(document.getElementById("chart-n"),
      [{name: "best-so-far", x: cv.n, y: cv.best, points: pts(0)}],
      {xlabel: "evaluations finished", ylabel: label, empty: "no passed evaluation yet"});
    sdsChart.lines(document.getElementById("chart-t"),
      [{name: "best-so-far", x: cv.t, y: cv.best, points: pts(1)}],
      {xlabel: "seconds since the run started", ylabel: label, empty: "no passed evaluation yet"});
    sdsChart.bars(document.getElementById("chart-status"),
      Object.entries(s.by_status).map(([k, v]) => [k, v, STATUS_COLOR[k]]), {empty: "no evaluations yet"});
    sdsChart.bars(document.getElementById("chart-stage"),
      Object.entries(s.failed_by_stage).map(([k, v]) => [k, v, "#c0392b"]), {empty: "no failures"});
    const ops = d.operators;
    sdsChart.stacked(document.getElementById("chart-ops"), ops.buckets, ops.arms,
      {xlabel: `time window (${ops.bucket_size} evaluations each)`});
    const rate = ops.arms.filter(a => ops.total[a].evaluations >= 5).map(a => {
      const x = [], y = [];
      ops.buckets.forEach((b, i) => { if (b[a]) { x.push(i + 1); y.push(100 * (ops.passed[i][a] || 0) / b[a]); } });
      return {name: a, x: x, y: y, color: sdsChart.PALETTE[ops.arms.indexOf(a) % sdsChart.PALETTE.length]};
    });
    sdsChart.lines(document.getElementById("chart-success"), rate,
      {xlabel: `time window (${ops.bucket_size} evaluations each)`, ylabel: "passed (%)",
       legend: true, linear: true, empty: "no evaluations yet"});
    const rows = ops.arms.map(a => ({arm: a, ...ops.total[a]}));
    const pct = (a, b) => b ? `${(100 * a / b).toFixed(0)}%` : "–";
    document.getElementById("ops-table").replaceChildren(sds.table([
      ["operator", r => r.arm], ["evaluations", r => r.evaluations], ["passed", r => pct(r.passed, r.evaluations)],
      ["improved on parent", r => pct(r.improved, r.evaluations)]], rows));
    document.getElementById("islands-table").replaceChildren(sds.table([
      ["island", r => r.island], ["runtimes", r => r.runtimes], ["evaluated", r => r.evaluated],
      ["passed", r => r.passed], ["best", r => r.best_runtime ? sds.link(`/runtime/${r.best_runtime}`, sds.fmt(r.best)) : "–"],
      ["max gen", r => r.generation], ["migrants in", r => r.migrants_in], ["out", r => r.migrants_out]], d.islands));
    document.getElementById("events").replaceChildren(sds.table(
      [["event", r => r[0]], ["count", r => r[1]]], Object.entries(d.events)));
    document.getElementById("config").textContent = JSON.stringify(d.config, null, 2);
    document.getElementById("updated").textContent = d.updated_at;
    root.dataset.rendered = String(Date.now());
  }

  let wait = 5000;
  async function load() {
    const t = performance.now();
    try {
      render(await sds.json(`/api/run/${id}`));
      wait = Math.max(5000, 3 * (performance.now() - t));  // a big run's summary takes time
    } catch (e) {
      document.getElementById("updated").textContent = "update failed: " + e.message;
    }
    const live = root.dataset.status === "running" || root.dataset.status === "created";
    document.getElementById("live").hidden = !live;
    clearTimeout(timer);
    if (live) timer = setTimeout(load, wait);
  }
  load();
})();
