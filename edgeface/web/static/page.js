// The page's only script. Forms that remove something ask first. The live view asks for the newest frame's
// faces a few times a second while the page is visible, then for that frame's picture, and draws the boxes
// over it; nothing is asked while the tab is hidden, so the daemon encodes no frame for it. Every form of the
// page works without this script.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  var live = document.getElementById("live");
  if (!live) return;
  var image = document.getElementById("live-image");
  var boxes = document.getElementById("live-boxes");
  var rows = document.getElementById("live-faces");
  var status = document.getElementById("live-status");
  var period = 1000 / Math.max(0.2, parseFloat(live.dataset.fps) || 4);
  var shown = null, rowsHtml = null, busy = false, timer = null, failures = 0;

  function draw(state) {
    boxes.textContent = "";
    state.faces.forEach(function (face) {
      var b = face.box, id = face.identity;
      var box = document.createElement("div");
      box.className = "box" + (id.label === "unknown" ? " unknown" : "") + (b[1] / state.height < 0.08 ? " below" : "") +
        ((b[0] + b[2]) / 2 > state.width / 2 ? " right" : "");  // the label grows away from the nearer edge
      box.style.left = (100 * b[0] / state.width) + "%";
      box.style.top = (100 * b[1] / state.height) + "%";
      box.style.width = (100 * (b[2] - b[0]) / state.width) + "%";
      box.style.height = (100 * (b[3] - b[1]) / state.height) + "%";
      var label = document.createElement("span");
      label.textContent = "#" + face.track + " " + id.label + " " + id.score.toFixed(2) + " · " + face.emotion.label +
        " · " + face.gender.label;  // #track: the same number as in the list below
      box.appendChild(label);
      boxes.appendChild(box);
    });
    // A label wider than the room beside its box is moved back inside the picture (phones).
    var frame = live.getBoundingClientRect();
    boxes.querySelectorAll(".box span").forEach(function (label) {
      var r = label.getBoundingClientRect();
      var dx = r.left < frame.left ? frame.left - r.left : (r.right > frame.right ? frame.right - r.right : 0);
      if (dx) label.style.transform = "translateX(" + dx + "px)";
    });
  }

  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(live.dataset.api, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { location.reload(); throw new Error("signed out"); }
        return response.json();
      })
      .then(function (state) {
        failures = 0;
        // Rendered (and escaped) by the server, without scores: it changes only when a label does, so a
        // button is not replaced under the finger.
        if (state.rows !== rowsHtml) { rows.innerHTML = state.rows; rowsHtml = state.rows; }
        if (state.frame === null || state.frame === shown) { busy = false; return; }
        var next = new Image();
        next.onload = function () {
          image.src = next.src;
          shown = state.frame;
          draw(state);
          status.textContent = "frame " + state.frame + " · " + state.faces.length + (state.faces.length === 1 ? " face" : " faces");
          busy = false;
        };
        next.onerror = function () { busy = false; };
        next.src = live.dataset.image + "?frame=" + state.frame;
      })
      .catch(function () {
        busy = false;
        failures += 1;
        status.textContent = "the daemon does not answer" + (failures > 1 ? " (" + failures + " tries)" : "");
      });
  }

  function start() { if (!timer) { timer = setInterval(tick, period); tick(); } }
  function stop() { clearInterval(timer); timer = null; }
  document.addEventListener("visibilitychange", function () { if (document.hidden) stop(); else start(); });
  start();
})();
