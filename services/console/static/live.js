// Live parts of a page: an element with data-live="URL" is replaced by URL's HTML every
// data-every milliseconds (the server renders the fragment; no framework, no build step).
(function () {
  function refresh(element) {
    var url = element.getAttribute("data-live");
    var every = parseInt(element.getAttribute("data-every") || "2000", 10);
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 303) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          element.innerHTML = html;
          element.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* a failed poll keeps the last figures; the next one retries */ })
      .finally(function () { window.setTimeout(function () { refresh(element); }, every); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      var every = parseInt(element.getAttribute("data-every") || "2000", 10);
      window.setTimeout(function () { refresh(element); }, every);
    });
  });
})();
