// p2pwatch web: the localised file pickers of templates/_file_input.html. This script marks the page as
// scripted (the native input is then hidden, its <label> button shown) and writes the chosen file names
// beside the button. Without it the native input stays visible and the form submits the same way.
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".file-pick input[type=file]").forEach(function (input) {
    var shown = document.getElementById(input.id + "-chosen");
    if (!shown) {
      return;
    }
    function update() {
      var names = Array.prototype.map.call(input.files || [], function (f) { return f.name; });
      shown.textContent = names.length ? names.join(", ") : shown.getAttribute("data-none");
    }
    input.addEventListener("change", update);
    update();
  });
});
