// The length histograms on a dataset version page (UTF-8 bytes, tokens, chat turns).
(function () {
  "use strict";
  const data = document.getElementById("dataset-charts");
  if (!data) return;
  const charts = JSON.parse(data.textContent);
  const LABELS = { bytes: "UTF-8 bytes per row", tokens: "tokens per row", turns: "chat turns per row" };
  for (const [name, histogram] of Object.entries(charts)) {
    const el = document.getElementById(`chart-${name}`);
    if (!el) continue;
    const edges = histogram.edges;
    const labels = histogram.counts.map((_, i) => `${edges[i]}–${edges[i + 1] - 1}`);
    // The site's chart look (plots.js), like every other chart.
    tuneyardPlot(el, [{ type: "bar", x: labels, y: histogram.counts, name: name }], {
      height: 220, margin: { t: 10, r: 10, b: 60, l: 50 }, showlegend: false,
      xaxis: { title: { text: LABELS[name] || name } }, yaxis: { title: { text: "rows" } },
    });
  }
})();
