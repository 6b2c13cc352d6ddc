// The compare page: one chart per metric with every run overlaid, and the display options
// (smoothing, log scale, x axis, only differences, baseline) kept in the address so a link
// opens the page as it was left. The series come downsampled from the server (#compare-data).
(function () {
  "use strict";
  const dataEl = document.getElementById("compare-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const state = Object.assign({ diff: false }, data.state);
  const charts = document.getElementById("charts");

  function writeUrl() {
    const url = new URL(window.location.href);
    const set = (name, value, fallback) => {
      if (value === fallback) url.searchParams.delete(name);
      else url.searchParams.set(name, String(value));
    };
    set("smooth", state.smooth, 0);
    set("log", state.log ? 1 : 0, 0);
    set("x", state.x, "step");
    set("diff", state.diff ? 1 : 0, 0);
    window.history.replaceState(null, "", url);
  }

  // TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
  // pulled towards zero.
  function smoothed(values, weight) {
    if (!weight) return values;
    let last = 0;
    return values.map((v, i) => {
      last = last * weight + (1 - weight) * v;
      return last / (1 - Math.pow(weight, i + 1));
    });
  }

  // The tokens seen at each step, by linear interpolation of the run's own tokens series.
  function tokensAt(series, steps) {
    let j = 0;
    return steps.map((s) => {
      while (j < series.steps.length - 2 && series.steps[j + 1] < s) j++;
      const s0 = series.steps[j], s1 = series.steps[Math.min(j + 1, series.steps.length - 1)];
      const t0 = series.values[j], t1 = series.values[Math.min(j + 1, series.values.length - 1)];
      return s1 === s0 ? t0 : t0 + ((t1 - t0) * (s - s0)) / (s1 - s0);
    });
  }

  function xValues(run, series) {
    if (state.x === "time") return run.seconds_per_step ? series.steps.map((s) => s * run.seconds_per_step) : null;
    if (state.x === "tokens") {
      const tokens = data.tokens[String(run.id)];
      return tokens ? tokensAt(tokens, series.steps) : null;
    }
    return series.steps;
  }

  const titles = { step: "step", time: "seconds (estimated)", tokens: "tokens seen" };

  function draw() {
    if (!charts) return;
    for (const [name, byRun] of Object.entries(data.metrics)) {
      let el = charts.querySelector(`[data-metric="${CSS.escape(name)}"]`);
      if (!el) {
        el = document.createElement("div");
        el.className = "chart compare-chart";
        el.dataset.metric = name;
        charts.appendChild(el);
      }
      const traces = [];
      for (const run of data.runs) {
        const series = byRun[String(run.id)];
        if (!series) continue;
        const x = xValues(run, series);
        if (!x) continue;
        traces.push({
          x: x,
          y: smoothed(series.values, state.smooth),
          name: run.label,
          mode: series.values.length > 1 ? "lines" : "markers",
          line: { color: run.colour, width: 1.6 },
          marker: { color: run.colour },
          hovertemplate: `${run.id}: %{y:.4g}<extra></extra>`,
        });
      }
      window.tuneyardPlot(el, traces, {
        title: { text: name },
        height: 280,
        showlegend: false,
        margin: { t: 34, r: 10, b: 40, l: 55 },
        xaxis: { title: { text: titles[state.x] } },
        yaxis: { type: state.log ? "log" : "linear" },
      });
      el.dataset.traces = String(traces.length);
    }
  }

  const smooth = document.getElementById("smooth");
  const smoothValue = document.getElementById("smooth-value");
  if (smooth) {
    smooth.addEventListener("input", () => {
      state.smooth = Number(smooth.value) / 100;
      if (smoothValue) smoothValue.textContent = state.smooth.toFixed(2);
      writeUrl();
      draw();
    });
  }
  const logScale = document.getElementById("log-scale");
  if (logScale) {
    logScale.addEventListener("change", () => {
      state.log = logScale.checked;
      writeUrl();
      draw();
    });
  }
  const xAxis = document.getElementById("x-axis");
  if (xAxis) {
    xAxis.addEventListener("change", () => {
      state.x = xAxis.value;
      writeUrl();
      draw();
    });
  }
  const onlyDiff = document.getElementById("only-diff");
  const paramTable = document.getElementById("param-table");
  if (onlyDiff && paramTable) {
    state.diff = onlyDiff.checked;
    onlyDiff.addEventListener("change", () => {
      state.diff = onlyDiff.checked;
      paramTable.classList.toggle("only-diff", state.diff);
      writeUrl();
    });
  }
  // The deltas are the server's: a new baseline loads the page again with it.
  for (const radio of document.querySelectorAll('input[name="baseline"]')) {
    radio.addEventListener("change", () => {
      const url = new URL(window.location.href);
      url.searchParams.set("baseline", radio.value);
      window.location.assign(url);
    });
  }
  const copy = document.getElementById("compare-copy");
  if (copy) {
    copy.addEventListener("click", () => {
      if (navigator.clipboard) navigator.clipboard.writeText(window.location.href).then(() => (copy.textContent = "Link copied"));
    });
  }

  function start() {
    draw();
    if (charts) charts.dataset.drawn = String(Object.keys(data.metrics).length);
  }
  if (typeof Plotly === "undefined") window.addEventListener("load", start);
  else start();
})();
