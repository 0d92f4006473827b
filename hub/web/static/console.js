// Keyboard use of the console: j/k move through a list, Enter (or o) opens the selected row;
// on a review pair m merges, r rejects, d defers. Keys typed into a field are left alone.
(function () {
  "use strict";
  function typing(event) {
    var el = event.target;
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.row[data-href]")); }
  var selected = -1;
  function select(i) {
    var all = rows();
    if (!all.length) { return; }
    selected = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (row, n) { row.classList.toggle("selected", n === selected); });
    all[selected].scrollIntoView({ block: "nearest" });
  }
  function decide(key) {
    var button = document.querySelector("#decision-form button[data-key='" + key + "']");
    if (button) { button.click(); return true; }
    return false;
  }
  document.addEventListener("keydown", function (event) {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key;
    if (key === "j") { select(selected + 1); event.preventDefault(); }
    else if (key === "k") { select(selected < 0 ? 0 : selected - 1); event.preventDefault(); }
    else if ((key === "Enter" || key === "o") && selected >= 0) {
      window.location.href = rows()[selected].getAttribute("data-href"); event.preventDefault();
    }
    else if ((key === "m" || key === "r" || key === "d") && decide(key)) { event.preventDefault(); }
  });
  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest("tr.row[data-href]");
    if (row && !event.target.closest("a, button, input")) { window.location.href = row.getAttribute("data-href"); }
  });
})();
