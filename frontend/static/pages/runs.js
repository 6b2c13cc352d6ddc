// The runs table: row selection drives the Compare link (2 to 10 runs) and the count of the bulk
// actions; the checkboxes belong to the bulk form (form="bulk"), so posting works without this file.
(function () {
  "use strict";

  function setUp() {
    const table = document.getElementById("runs-table");
    const link = document.getElementById("compare-link");
    const count = document.getElementById("selected-count");
    if (!link || !count) return;
    const boxes = () => Array.from(document.querySelectorAll("input.run-select"));
    const min = Number(link.dataset.min || 2);
    const max = Number(link.dataset.max || 10);

    function refresh() {
      const ids = boxes().filter((box) => box.checked).map((box) => box.value);
      count.textContent = ids.length + " selected";
      link.href = link.dataset.base + "?runs=" + ids.join(",");
      const usable = ids.length >= min && ids.length <= max;
      link.setAttribute("aria-disabled", usable ? "false" : "true");
      link.title = usable ? "Compare " + ids.length + " runs" : "Select " + min + " to " + max + " runs to compare";
      for (const box of boxes()) box.closest("tr").classList.toggle("selected", box.checked);
    }

    link.addEventListener("click", (event) => {
      if (link.getAttribute("aria-disabled") === "true") event.preventDefault();
    });
    const all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", () => {
        for (const box of boxes()) box.checked = all.checked;
        refresh();
      });
    }
    if (table) table.addEventListener("change", refresh);
    const cancel = document.getElementById("bulk-cancel");
    if (cancel) {
      cancel.addEventListener("click", (event) => {
        const n = boxes().filter((box) => box.checked).length;
        if (n && !window.confirm("Cancel " + n + " selected run" + (n === 1 ? "" : "s") + "?")) event.preventDefault();
      });
    }
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
