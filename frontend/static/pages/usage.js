// The per-person usage chart (a dashboard's "usage-chart"): run-hours and GPU-hours per person.
(function () {
  "use strict";
  const el = document.getElementById("usage-chart");
  const data = document.getElementById("usage-data");
  if (!el || !data || typeof window.tuneyardPlot !== "function") return;
  const rows = JSON.parse(data.textContent);
  const users = rows.map((r) => r.user);
  window.tuneyardPlot(el, [
    { type: "bar", name: "run-hours", x: users, y: rows.map((r) => r.run_hours) },
    { type: "bar", name: "GPU-hours", x: users, y: rows.map((r) => r.gpu_hours) },
  ], { barmode: "group", height: 260, margin: { t: 10, r: 10, b: 40, l: 55 }, yaxis: { title: { text: "hours" } }, xaxis: { type: "category" } });
  el.dataset.drawn = "true";
})();
