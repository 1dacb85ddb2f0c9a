// sds ui: best-so-far curves of several runs on one plot.
"use strict";
(async () => {
  const root = document.getElementById("compare");
  const q = root.dataset.runs.split(",").map(i => "run=" + encodeURIComponent(i)).join("&");
  const d = await sds.json(`/api/compare?${q}`);
  const label = d.metrics.join(" / ");
  const series = k => d.curves.map(c => ({name: c.run, x: c[k], y: c.best}));
  sdsChart.lines(document.getElementById("chart-n"), series("n"),
                 {xlabel: "evaluations finished", ylabel: label, legend: true});
  sdsChart.lines(document.getElementById("chart-t"), series("t"),
                 {xlabel: "seconds since the run started", ylabel: label, legend: true});
  root.dataset.rendered = "1";
})();
