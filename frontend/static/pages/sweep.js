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
