// The approvals console's only script: time left on each approval, the
// queue kept live, and decision buttons that cannot be clicked twice.
// Served from /console/static under a CSP that allows no inline script.
(function () {
  "use strict";

  function format(ms) {
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h > 0 ? h + "h " + String(m).padStart(2, "0") + "m" : m + "m " + String(r).padStart(2, "0") + "s";
  }

  function tick() {
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var left = Date.parse(el.dataset.expires) - Date.now();
      el.textContent = left <= 0 ? "expired" : format(left);
      el.classList.toggle("expired", left <= 0);
      el.classList.toggle("soon", left > 0 && left < 5 * 60 * 1000);
    });
  }

  var live = document.getElementById("live"), rows = document.getElementById("rows");
  function refresh() {
    if (document.hidden) {
      return; // a tab in the background polls nothing
    }
    fetch(live.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 503) {
          throw new Error("unavailable");
        }
        if (!r.ok || r.redirected || (r.headers.get("Content-Type") || "").indexOf("text/html") !== 0) {
          throw new Error("signed out");
        }
        return r.text();
      })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html; // the server's own escaped rows
        rows.replaceChildren(t.content);
        live.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
        live.classList.remove("paused");
        tick();
      })
      .catch(function (e) {
        live.textContent = e.message === "unavailable"
          ? "The queue cannot be read just now; the rows below may be out of date. Still trying."
          : "Live updates paused: reload the page (you may need to sign in again).";
        live.classList.add("paused");
      });
  }
  if (live && rows) {
    setInterval(refresh, 3000);
  }

  document.querySelectorAll("form.decide").forEach(function (f) {
    f.addEventListener("submit", function () {
      // After the browser has taken the clicked button's value.
      setTimeout(function () {
        f.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  });

  setInterval(tick, 1000);
  tick();
})();
