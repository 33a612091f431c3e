// A person's view preferences in a project, kept on the server (GET/PATCH
// /api/v1/projects/<slug>/preferences/, labeling/services/preferences.py), so they follow the
// person from browser to browser. The page config carries them, so nothing waits on a request.
//
// Image protection, one of:
//   off        images as they are;
//   blur       blurred until revealed (R, a click or hovering): the reveal is for the image (or
//              the grid page) on screen, the next one is blurred again;
//   session    blurred until revealed once: then the reveal stays on until the tab is closed;
//   grayscale  no blur, no colour.
// The body carries the classes the stylesheet reads: blur-on, reveal-kept, grayscale-on,
// pixelated.

import { api } from "./api.js";

const SESSION_KEY = (slug) => `imageclean:reveal-kept:${slug}`;

export class Preferences {
  constructor({ url, initial, slug }) {
    this.url = url;
    this.slug = slug;
    this.values = { ...initial };
    this.listeners = [];
  }

  get protection() {
    return this.values.protection;
  }

  onChange(fn) {
    this.listeners.push(fn);
  }

  // Change some preferences now on the page, then on the server (a failure there only means
  // the next visit starts from the old value).
  async set(patch) {
    Object.assign(this.values, patch);
    for (const fn of this.listeners) fn(this);
    try {
      const { ok, data } = await api(this.url, { method: "PATCH", body: patch, keepalive: true });
      if (ok && data) this.values = { ...this.values, ...data, ...patch };
    } catch {
      // Offline: the page keeps the choice for now.
    }
  }

  get revealKept() {
    try {
      return this.protection === "session" && sessionStorage.getItem(SESSION_KEY(this.slug)) === "1";
    } catch {
      return false;
    }
  }

  set revealKept(on) {
    try {
      if (on) sessionStorage.setItem(SESSION_KEY(this.slug), "1");
      else sessionStorage.removeItem(SESSION_KEY(this.slug));
    } catch {
      // Storage disabled: the reveal lasts for this image only.
    }
    this.apply();
  }

  blurs() {
    return this.protection === "blur" || this.protection === "session";
  }

  apply() {
    const body = document.body.classList;
    body.toggle("blur-on", this.blurs());
    body.toggle("reveal-kept", this.revealKept);
    body.toggle("grayscale-on", this.protection === "grayscale");
    body.toggle("pixelated", Boolean(this.values.pixelated));
  }
}

// The protection menu in the toolbar and the explanation shown on a first visit (once per
// person and project: it is marked seen on the server as soon as it is shown).
export function setupProtection(prefs, { select, intro }) {
  prefs.onChange(() => {
    prefs.apply();
    if (select) select.value = prefs.protection;
  });
  prefs.apply();
  if (select) {
    select.value = prefs.protection;
    select.addEventListener("change", () => {
      prefs.set({ protection: select.value });
      select.blur(); // back to the page's keys
    });
  }
  if (intro && !prefs.values.intro_seen) {
    intro.hidden = false;
    for (const button of intro.querySelectorAll("button[data-protection]")) {
      button.setAttribute("aria-pressed", String(button.dataset.protection === prefs.protection));
      button.addEventListener("mousedown", (e) => e.preventDefault());
      button.addEventListener("click", () => {
        prefs.set({ protection: button.dataset.protection });
        intro.hidden = true;
      });
    }
    intro.querySelector("[data-close]")?.addEventListener("click", () => {
      intro.hidden = true;
    });
    prefs.set({ intro_seen: true });
  }
}

// B: protection on or off (back to the blur mode when it was off).
export function toggleProtection(prefs) {
  prefs.set({ protection: prefs.protection === "off" ? "blur" : "off" });
}
