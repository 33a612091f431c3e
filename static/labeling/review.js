// Keyboard for the re-review page: C confirms, F flips (two-class schemas), a class hotkey
// corrects to that class. The buttons are ordinary submit buttons, so the page works without
// this script too; keys just click them. A form submits once: repeated keys are ignored.
const form = document.getElementById("review-form");

// Blurred images show on hover; touch screens have none, so a tap (or click) reveals the
// image and a second one blurs it again.
for (const figure of document.querySelectorAll(".review figure.blur-on")) {
  figure.addEventListener("click", () => figure.classList.toggle("revealed"));
}
let sent = false;

function press(button) {
  if (!button || button.disabled || sent) return;
  sent = true;
  form.requestSubmit(button);
}

if (form) {
  form.addEventListener("submit", () => { sent = true; });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, select")) return;
    const key = event.key.toLowerCase();
    if (key === "c") {
      press(document.getElementById("review-confirm"));
    } else if (key === "f") {
      press(document.getElementById("review-flip"));
    } else {
      press(form.querySelector(`button[data-hotkey="${CSS.escape(key)}"]`));
    }
  });
}
