// The usage chart on a project page: run-hours and GPU-hours per person.
(function () {
  "use strict";
  const el = document.getElementById("usage-chart");
  const data = document.getElementById("usage-data");
  if (!el || !data) return;
  const rows = JSON.parse(data.textContent);
  const users = rows.map((r) => r.user);
  Plotly.newPlot(el, [
    { type: "bar", name: "run-hours", x: users, y: rows.map((r) => r.run_hours) },
    { type: "bar", name: "GPU-hours", x: users, y: rows.map((r) => r.gpu_hours) },
  ], { barmode: "group", height: 220, margin: { t: 10, r: 10, b: 40, l: 50 }, yaxis: { title: { text: "hours" } } },
  { displaylogo: false, responsive: true });
})();
