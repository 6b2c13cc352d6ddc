// One look for every chart on the site (Optuna's figures included): the site's font, colours and
// margins, a small toolbar, and a size that follows the card. Page scripts draw with
// tuneyardPlot(element, traces, layout) instead of calling Plotly directly.
(function () {
  "use strict";
  const css = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => (css.getPropertyValue(name) || fallback).trim();
  const COLOURS = ["#3a5bd9", "#1f8a4c", "#c23b3b", "#b7791f", "#7c4dbd", "#168a8a", "#d4568c", "#5d6b82", "#8a9a1f", "#e07b39"];

  function themed(layout) {
    const fg = colour("--fg", "#1d2433");
    const line = colour("--line", "#e3e6ee");
    const base = {
      font: { family: 'system-ui, -apple-system, "Segoe UI", sans-serif', size: 12, color: fg },
      colorway: COLOURS,
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      margin: { t: 30, r: 10, b: 40, l: 55 },
      legend: { orientation: "h", y: -0.2, font: { size: 11 } },
      hoverlabel: { font: { family: 'system-ui, sans-serif' } },
      autosize: true,
    };
    const merged = Object.assign({}, base, layout || {});
    for (const axis of Object.keys(merged).filter((k) => /^[xy]axis\d*$/.test(k)).concat(["xaxis", "yaxis"])) {
      merged[axis] = Object.assign({ gridcolor: line, zerolinecolor: line, linecolor: line, automargin: true }, merged[axis] || {});
    }
    // Optuna's figures carry their own template and a fixed width: the site's look and the card's width win.
    delete merged.template;
    delete merged.width;
    if (merged.title && typeof merged.title === "object") merged.title = Object.assign({}, merged.title, { font: { size: 13 }, x: 0 });
    return merged;
  }

  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"] };

  window.tuneyardPlot = function (el, traces, layout) {
    if (typeof Plotly === "undefined" || !el) return null;
    return Plotly.react(el, traces, themed(layout), CONFIG);
  };
  window.tuneyardLayout = themed;
})();
