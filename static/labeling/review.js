// Keyboard for the re-review page. The page's own keys (confirm, flip: two-class schemas,
// reveal) come from the one declaration on the server (labeling/keys.py, in the "review-keys"
// block); every class hotkey corrects to that class, and the schema validator keeps the two
// apart. The buttons are ordinary submit buttons, so the page works without this script too;
// keys just click them. A form submits once: repeated keys are ignored.
import { bindKeys } from "./keys.js";

const form = document.getElementById("review-form");
const pageKeys = JSON.parse(document.getElementById("review-keys").textContent);

// Blurred images show on hover; touch screens have none, so a tap (or click) reveals the
// image and a second one blurs it again.
const figures = [...document.querySelectorAll(".review figure.blur-on")];
for (const figure of figures) {
  figure.addEventListener("click", () => figure.classList.toggle("revealed"));
}
let sent = false;

function press(button) {
  if (!button || button.disabled || sent) return false;
  sent = true;
  form.requestSubmit(button);
  return true;
}

// The class hotkeys are the buttons' own (data-hotkey), so a key only means a class shown here.
const classKeys = new Map(
  form ? [...form.querySelectorAll("button[data-hotkey]")].map((b) => [b.dataset.hotkey.toLowerCase(), b]) : [],
);

if (form) form.addEventListener("submit", () => { sent = true; });
bindKeys({
  pageKeys,
  hotkeys: classKeys,
  onHotkey: (button) => press(button),
  handlers: {
    confirm: () => press(document.getElementById("review-confirm")),
    flip: () => press(document.getElementById("review-flip")),
    reveal: () => {
      for (const figure of figures) figure.classList.toggle("revealed");
    },
    other: () => false,
  },
});
