// The dashboards' charts: queue depth and wait, GPU-hours per week and project, GPU use with idle time.
// The data comes from the page (json_script "dashboard-data"); the tables beside them hold the numbers.
(function () {
  "use strict";
  const data = document.getElementById("dashboard-data");
  if (!data || typeof window.tuneyardPlot !== "function") return;
  const charts = JSON.parse(data.textContent);

  function draw(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el) return;
    window.tuneyardPlot(el, traces, Object.assign({ height: 300 }, layout));
    el.dataset.drawn = "true";
  }

  const q = charts.queue;
  draw("queue-chart", [
    { type: "scatter", mode: "lines", name: "queued", x: q.t, y: q.depth, line: { shape: "hv" } },
    { type: "scatter", mode: "lines+markers", name: "mean wait (min)", x: q.t, y: q.wait_minutes, yaxis: "y2", connectgaps: false },
  ], {
    yaxis: { title: { text: "jobs queued" }, rangemode: "tozero" },
    yaxis2: { title: { text: "wait (min)" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
    margin: { t: 10, r: 50, b: 40, l: 55 },
  });

  // weeks.rows: [week, project, jobs, gpu_hours, cost]; one stacked bar per project.
  const weeks = charts.weeks.rows;
  const projects = [...new Set(weeks.map((r) => r[1]))];
  draw("weeks-chart", projects.map((p) => {
    const rows = weeks.filter((r) => r[1] === p);
    return {
      type: "bar", name: p, x: rows.map((r) => r[0]), y: rows.map((r) => r[3]),
      customdata: rows.map((r) => (r[4] === null ? "no price" : r[4])),
      hovertemplate: "%{x}: %{y} GPU-h, cost %{customdata}<extra>" + p + "</extra>",
    };
  }), { barmode: "stack", yaxis: { title: { text: "GPU-hours" }, rangemode: "tozero" }, xaxis: { type: "category", title: { text: "week of" } }, margin: { t: 10, r: 10, b: 40, l: 55 } });

  const u = charts.utilization;
  draw("utilization-chart", [
    { type: "bar", name: "busy GPU-h", x: u.t, y: u.busy_gpu_hours, marker: { color: "#1f8a4c" } },
    { type: "bar", name: "idle GPU-h (waste)", x: u.t, y: u.idle_gpu_hours, marker: { color: "#c23b3b" } },
    { type: "scatter", mode: "lines", name: "mean use (%)", x: u.t, y: u.utilization, yaxis: "y2", line: { color: "#3a5bd9" } },
  ], {
    barmode: "stack",
    yaxis: { title: { text: "GPU-hours" }, rangemode: "tozero" },
    yaxis2: { title: { text: "use (%)" }, overlaying: "y", side: "right", range: [0, 100], showgrid: false },
    margin: { t: 10, r: 50, b: 40, l: 55 },
  });
})();
