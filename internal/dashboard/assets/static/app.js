// meshd dashboard: the little that HTML forms cannot do. Every page works
// without it.
"use strict";
(function () {
  // Live peers table: the server sends the rendered table body whenever it
  // changes (server-sent events).
  var live = document.querySelector("[data-live]");
  if (live && window.EventSource) {
    var es = new EventSource(live.getAttribute("data-live"));
    es.addEventListener("peers", function (ev) {
      live.innerHTML = ev.data; // HTML escaped by the server's templates
      live.setAttribute("data-updated", String(Date.now()));
    });
    es.addEventListener("signedout", function () {
      es.close();
      window.location.assign("/signin?next=" + encodeURIComponent(window.location.pathname));
    });
  }
  // Copy buttons.
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var text = document.getElementById(b.getAttribute("data-copy")).textContent;
      var done = function () { b.textContent = "Copied"; };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(text).then(done, function () { select(b); });
      } else {
        select(b);
      }
    });
  });
  function select(b) {
    var r = document.createRange();
    r.selectNodeContents(document.getElementById(b.getAttribute("data-copy")));
    var s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
    b.textContent = "Selected: press Ctrl+C";
  }
  // Confirm deletions.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
  // Focus the first field with an error.
  var bad = document.querySelector("[aria-invalid=true], .field-error");
  if (bad) {
    var input = bad.matches("input, select") ? bad : bad.previousElementSibling;
    if (input && input.focus) input.focus();
  }
})();
