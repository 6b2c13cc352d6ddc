// The loss chart on a job page: Plotly, fed by the job's metrics endpoint,
// refreshed every two seconds until the job finishes.
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
