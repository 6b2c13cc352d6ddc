// A sweep's charts: Optuna's own Plotly figures, drawn in the site's look by tuneyardPlot (plots.js).
// The charts' elements live outside the panel htmx refreshes: a swapped-in element that shares an id
// with the old one gets the old one's attributes only until htmx settles, which would take Plotly's
// classes (and so its toolbar and title styles) off a chart drawn in between. Each refresh brings
// only the figures' data, and a chart is drawn again only when its figure changed.
(function () {
  "use strict";
  const shown = {}; // chart name -> the figure JSON drawn there

  function draw() {
    if (typeof window.tuneyardPlot !== "function") return;
    const pending = [];
    document.querySelectorAll(".sweep-chart").forEach((el) => {
      const name = el.id.replace(/^chart-/, "");
      const data = document.getElementById("figure-" + name);
      if (!data || shown[name] === data.textContent) return; // unchanged, or not drawable yet
      pending.push([el, name, data.textContent]);
    });
    if (!pending.length) return;
    // Shown before drawing: Plotly sizes a chart from its element, which has no width while hidden.
    const section = document.getElementById("sweep-charts");
    if (section) section.hidden = false;
    for (const [el, name, text] of pending) {
      const box = document.getElementById("box-" + name);
      if (box) box.hidden = false;
      const figure = JSON.parse(text);
      const layout = Object.assign({}, figure.layout, { height: 340 });
      // Optuna writes each importance beside its bar: room for the longest one on the right.
      if (name === "importance") layout.margin = { t: 30, r: 45, b: 40, l: 55 };
      window.tuneyardPlot(el, figure.data, layout);
      shown[name] = text;
    }
  }

  draw();
  // Cheap when nothing changed: each chart compares its figure's text before drawing.
  document.body.addEventListener("htmx:afterSettle", draw);
})();
