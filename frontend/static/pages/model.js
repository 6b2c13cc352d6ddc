// A registered model's page: each suite's results over the model's versions, one line per task and
// metric. The data comes from the page (json_script "suite-results-data"); the lineage needs no script.
(function () {
  "use strict";
  const data = document.getElementById("suite-results-data");
  const box = document.getElementById("suite-chart");
  if (!data || !box || typeof window.tuneyardPlot !== "function") return;
  const charts = JSON.parse(data.textContent);
  box.textContent = "";
  charts.forEach(function (chart, n) {
    const el = document.createElement("div");
    el.className = "suite-chart-one";
    el.id = "suite-chart-" + n;
    box.appendChild(el);
    window.tuneyardPlot(el, chart.series.map(function (line) {
      return {
        type: "scatter", mode: "lines+markers", name: line.task + " · " + line.metric,
        x: line.versions.map(function (v) { return "v" + v; }), y: line.values,
      };
    }), {
      title: { text: chart.suite }, height: 300,
      xaxis: { type: "category", title: { text: "version" } },
      yaxis: { title: { text: "score" } },
      margin: { t: 40, r: 10, b: 40, l: 55 },
    });
    el.dataset.drawn = "true";
  });
})();
