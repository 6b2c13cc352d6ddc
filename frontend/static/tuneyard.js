// Site-wide behaviour, on every page (each page's own charts and forms are in pages/*.js).
(function () {
  "use strict";
})();
