// Site-wide behaviour, on every page (each page's own charts and forms are in pages/*.js).
(function () {
  "use strict";

  // Times: the server writes <time datetime="ISO">… UTC</time>; the reader sees their own zone, named.
  // A time within the last day still shows its date: history rows are read days later.
  const FORMAT = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    timeZoneName: "short",
  });
  const FORMAT_SECONDS = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "short",
  });

  function localizeTimes(root) {
    const scope = root && root.querySelectorAll ? root : document;
    const times = Array.from(scope.querySelectorAll("time[datetime]"));
    if (scope.matches && scope.matches("time[datetime]")) times.push(scope);
    for (const el of times) {
      if (el.dataset.localized === el.getAttribute("datetime")) continue;
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) continue;
      // The UTC text stays in the tooltip, for people comparing with server logs.
      if (!el.title) el.title = el.textContent.trim();
      el.textContent = (el.hasAttribute("data-seconds") ? FORMAT_SECONDS : FORMAT).format(when);
      el.dataset.localized = el.getAttribute("datetime");
    }
  }

  // The section the page names (base.html's {% block section %}) is marked current in the navigation.
  function markSection() {
    const section = document.body.dataset.section;
    if (!section) return;
    for (const link of document.querySelectorAll(`nav [data-nav="${CSS.escape(section)}"]`)) {
      link.setAttribute("aria-current", "page");
    }
  }

  // The project switcher closes when the reader clicks elsewhere or presses Escape.
  function closeSwitcher(event) {
    const switcher = document.getElementById("project-switcher");
    if (!switcher || !switcher.open) return;
    if (event.type === "keydown" ? event.key === "Escape" : !switcher.contains(event.target)) switcher.open = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    markSection();
    localizeTimes(document);
  });
  // Parts that htmx swaps in (live progress, history) carry UTC times too. An outerHTML swap replaces
  // the event's target, so the whole page is looked at; times already shown are skipped.
  document.addEventListener("htmx:afterSwap", () => localizeTimes(document));
  document.addEventListener("htmx:afterSettle", () => localizeTimes(document));
  document.addEventListener("click", closeSwitcher);
  document.addEventListener("keydown", closeSwitcher);
  window.tuneyardLocalizeTimes = localizeTimes;
})();
