// Keyboard for the lead's review stream. The page's own keys (confirm, flip, skip, undo,
// comment, send back, help, protection, reveal) come from the one declaration on the server
// (labeling/keys.py, in the "review-keys" block); every class or sub-category hotkey is its
// button's own (data-hotkey), and the schema validator keeps the two apart (shared module
// keys.js). The decision buttons are ordinary submit buttons, so the page works without this
// script; keys click them. A form submits once: repeated keys are ignored.
import { api } from "./api.js";
import { bindKeys } from "./keys.js";

const page = document.getElementById("review-page");
const form = document.getElementById("review-form");
const comment = document.getElementById("review-comment");
const pageKeys = JSON.parse(document.getElementById("review-keys").textContent);

function say(text) {
  let box = document.getElementById("review-notice");
  if (!box) {
    box = document.createElement("p");
    box.id = "review-notice";
    box.className = "message error";
    box.setAttribute("role", "alert");
    page.insertBefore(box, page.querySelector("h1").nextSibling);
  }
  box.textContent = text;
}

// Protection: leads see the evidence as it is unless they chose a protection; B turns blurring
// on or off and keeps the choice (the person's preference in this project). A blurred image
// shows on hover, on a tap (touch screens have no hover) or with R.
const figures = [...document.querySelectorAll(".review-evidence figure")];
for (const figure of figures) {
  figure.addEventListener("click", () => {
    if (page.classList.contains("blur-on")) figure.classList.toggle("revealed");
  });
}

function toggleProtection() {
  const blurred = page.classList.toggle("blur-on");
  page.classList.remove("grayscale-on");
  for (const figure of figures) figure.classList.remove("revealed");
  const protection = blurred ? "blur" : "off";
  page.dataset.protection = protection;
  api(page.dataset.preferencesUrl, { method: "PATCH", body: { protection }, keepalive: true }).catch(() => {});
}

let sent = false;

function press(button) {
  if (!form || !button || button.disabled || sent) return false;
  if (button.value === "send_back" && !comment.value.trim()) {
    say(gettext("Write a comment first: the annotator reads it to know what to change."));
    comment.focus();
    return true;
  }
  sent = true;
  form.requestSubmit(button);
  return true;
}

// Undo is a form too (the server walks back the last step and shows that item again).
function undo() {
  const undoForm = document.getElementById("review-undo-form");
  if (!undoForm || sent) return false;
  sent = true;
  undoForm.requestSubmit();
  return true;
}


// The next items' images and heat maps, asked for once this page has loaded: the server renders
// a missing heat map and keeps it, and the browser caches both, so the next item is on screen
// at once. Loaded as images, they land in the cache the next page's <img> reads.
const upcoming = JSON.parse(document.getElementById("review-prefetch")?.textContent || "[]") || [];
function prefetch() {
  for (const url of upcoming) {
    const picture = new Image();
    picture.decoding = "async";
    picture.src = url;
  }
}
if (document.readyState === "complete") prefetch();
else window.addEventListener("load", prefetch, { once: true });

if (comment) {
  // Esc leaves the comment box, so the keys work again; Ctrl+Enter there confirms.
  comment.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      comment.blur();
    }
  });
}

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
    skip: () => press(document.getElementById("review-skip")),
    send_back: () => press(document.getElementById("review-send-back")),
    comment: () => {
      if (!comment) return false;
      comment.focus();
      return true;
    },
    undo: () => undo(),
    help: () => {
      const help = document.getElementById("review-help");
      if (help) help.open = !help.open;
    },
    protection: () => toggleProtection(),
    reveal: () => {
      for (const figure of figures) figure.classList.toggle("revealed");
    },
    other: () => false,
  },
});
