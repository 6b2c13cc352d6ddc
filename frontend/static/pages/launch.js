// The launch forms. Without this script every field shows and the server ignores the ones that
// do not apply; with it, a method's fields (data-method="lora qlora") and an objective's
// (data-objective="dpo") show only while that method or objective is chosen. Hidden fields keep
// what was typed in them, so choosing the method again brings it back.
(function () {
  "use strict";

  const form = document.getElementById("launch-form");
  if (form) {
    const scopes = [
      ["method", "method"],
      ["objective", "objective"],
    ];
    const sync = function () {
      scopes.forEach(([select, attribute]) => {
        const control = form.elements[select];
        if (!control) return;
        const chosen = control.value || (select === "objective" ? "sft" : "");
        form.querySelectorAll(`[data-${attribute}]`).forEach((field) => {
          field.hidden = !field.dataset[attribute].split(" ").includes(chosen);
        });
      });
      // A section of more options with nothing for this method (full fine-tuning) goes too.
      form.querySelectorAll("details").forEach((details) => {
        const fields = Array.from(details.querySelectorAll(".field"));
        details.hidden = fields.length > 0 && fields.every((field) => field.hidden);
      });
    };
    scopes.forEach(([select]) => {
      const control = form.elements[select];
      if (control) control.addEventListener("change", sync);
    });
    sync();
  }

  // The contamination checks of the dataset version chosen come first, marked.
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
