// The charts of a job page: one small chart per logged metric (the losses share one, #loss-chart),
// fed by the job's metrics endpoint and refreshed every two seconds until the job finishes.
// Before the first point arrives the area says so instead of showing empty axes.
(function () {
  "use strict";
  const box = document.getElementById("metric-charts");
  if (!box) return;
  const finished = ["succeeded", "failed", "cancelled"];
  const waiting = document.getElementById("metric-charts-waiting");

  // The losses (train and eval) go together, so their gap shows; every other metric alone.
  function groups(series) {
    const out = new Map();
    for (const name of Object.keys(series)) {
      const key = name.includes("loss") ? "loss" : name;
      if (!out.has(key)) out.set(key, []);
      out.get(key).push(name);
    }
    return out;
  }

  function chartFor(key) {
    const id = key === "loss" ? "loss-chart" : `metric-chart-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    let el = document.getElementById(id);
    if (!el) {
      el = document.createElement("div");
      el.id = id;
      el.className = "chart metric-chart";
      el.dataset.metric = key;
      // The loss first, then the rest in the order they came (alphabetical from the server).
      if (key === "loss") box.prepend(el);
      else box.appendChild(el);
    }
    return el;
  }

  async function draw() {
    const response = await fetch(box.dataset.url, { credentials: "same-origin" });
    if (!response.ok) return true;
    const body = await response.json();
    const series = body.series || {};
    const names = Object.keys(series).filter((name) => series[name].steps.length);
    if (waiting) {
      waiting.hidden = names.length > 0;
      if (!names.length && finished.includes(body.status)) waiting.textContent = "This job logged no metrics.";
    }
    for (const [key, members] of groups(series)) {
      const el = chartFor(key);
      const traces = members.map((name) => ({
        x: series[name].steps,
        y: series[name].values,
        name: name,
        mode: series[name].steps.length > 1 ? "lines" : "markers",
      }));
      window.tuneyardPlot(el, traces, {
        title: { text: key },
        height: 260,
        showlegend: members.length > 1,
        margin: { t: 34, r: 10, b: 40, l: 55 },
        xaxis: { title: { text: "step" } },
      });
      el.dataset.points = String(traces.reduce((n, t) => n + t.x.length, 0));
    }
    box.dataset.metrics = String(names.length);
    return finished.includes(body.status);
  }

  async function loop() {
    const done = await draw().catch(() => false);
    if (!done) setTimeout(loop, 2000);
  }
  loop();
})();

// The live panel is replaced every second: a log or history the reader opened (or closed) stays so.
(function () {
  "use strict";
  const state = {};
  document.body.addEventListener("htmx:beforeSwap", () => {
    document.querySelectorAll("#job-live details[id]").forEach((el) => { state[el.id] = el.open; });
  });
  document.body.addEventListener("htmx:afterSwap", () => {
    document.querySelectorAll("#job-live details[id]").forEach((el) => {
      if (el.id in state) el.open = state[el.id];
    });
  });
  document.addEventListener("toggle", (event) => {
    const el = event.target;
    if (el instanceof HTMLDetailsElement && el.id && el.closest("#job-live")) state[el.id] = el.open;
  }, true);
})();
