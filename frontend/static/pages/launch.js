// The launch form: the contamination checks of the dataset version chosen come first, marked.
(function () {
  "use strict";
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
