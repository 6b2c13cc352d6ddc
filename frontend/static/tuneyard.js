// The loss chart on a job page: Plotly, fed by the job's metrics endpoint,
// refreshed every two seconds until the job finishes.
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

(function () {
  "use strict";
  const el = document.getElementById("loss-chart");
  if (!el) return;
  const finished = ["succeeded", "failed", "cancelled"];

  async function draw() {
    const response = await fetch(el.dataset.url, { credentials: "same-origin" });
    if (!response.ok) return true;
    const body = await response.json();
    const traces = Object.entries(body.series)
      .filter(([name]) => name.includes("loss"))
      .map(([name, s]) => ({ x: s.steps, y: s.values, name: name, mode: "lines+markers" }));
    Plotly.react(el, traces, {
      margin: { t: 10, r: 10, b: 40, l: 50 },
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: "loss" } },
      height: 300,
    }, { displaylogo: false, responsive: true });
    el.dataset.points = String(traces.reduce((n, t) => n + t.x.length, 0));
    return finished.includes(body.status);
  }

  async function loop() {
    const done = await draw().catch(() => false);
    if (!done) setTimeout(loop, 2000);
  }
  loop();
})();

// A sweep's charts: Optuna's own Plotly figures, drawn again whenever htmx refreshes the panel.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll(".sweep-chart").forEach((el) => {
      const data = document.getElementById(el.id.replace("chart-", "figure-"));
      if (!data || typeof Plotly === "undefined") return;
      const figure = JSON.parse(data.textContent);
      figure.layout.height = 320;
      Plotly.react(el, figure.data, figure.layout, { displaylogo: false, responsive: true });
    });
  }
  draw();
  document.body.addEventListener("htmx:afterSwap", draw);
})();

// The length histograms on a dataset version page (UTF-8 bytes, tokens, chat turns).
(function () {
  "use strict";
  const data = document.getElementById("dataset-charts");
  if (!data) return;
  const charts = JSON.parse(data.textContent);
  for (const [name, histogram] of Object.entries(charts)) {
    const el = document.getElementById(`chart-${name}`);
    if (!el) continue;
    const edges = histogram.edges;
    const labels = histogram.counts.map((_, i) => `${edges[i]}–${edges[i + 1] - 1}`);
    Plotly.newPlot(el, [{ type: "bar", x: labels, y: histogram.counts, name: name }], {
      height: 220, margin: { t: 10, r: 10, b: 60, l: 50 },
      xaxis: { title: { text: name } }, yaxis: { title: { text: "rows" } },
    }, { displaylogo: false, responsive: true });
  }
})();

// The launch form: the contamination checks of the dataset version chosen come first, marked.
(function () {
  "use strict";
  const select = document.getElementById("id_dataset_version");
  const table = document.querySelector("#contamination tbody");
  if (!select || !table) return;
  function mark() {
    const rows = Array.from(table.querySelectorAll("tr"));
    rows.forEach((row) => row.classList.toggle("chosen", row.dataset.trainVersion === select.value));
    rows.filter((row) => row.classList.contains("chosen")).reverse().forEach((row) => table.prepend(row));
  }
  select.addEventListener("change", mark);
  mark();
})();
