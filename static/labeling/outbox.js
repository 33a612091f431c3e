// The labeling pages' outbox (the API client itself is api.js).
//
// Why an outbox: an annotator presses a key and must see the next image at once. The label is
// written to an in-memory queue mirrored in localStorage, and sent in the background, strictly
// in order (an undo must reach the server after the label it undoes). A network blip or a
// server restart only delays it: it is retried with exponential backoff and jitter; a page
// reload sends what was left. Every label carries a client_id, so a retry whose first attempt
// did land is stored once (the server is idempotent on it).
//
// Text the person reads goes through gettext() / interpolate(), globals defined by Django's
// JavaScript catalog (/jsi18n/, loaded by base.html before the page's modules run).

import { api, errorText, newClientId } from "./api.js";

const RETRY_STATUSES = new Set([401, 403, 408, 425, 429, 500, 502, 503, 504]);
const BACKOFF_MIN_MS = 400;
const BACKOFF_MAX_MS = 30000;

// entries: {id, type, ...}; `resolve(entry)` turns one into {url, body} (or null when it can no
// longer be sent), `onDone(entry, data)` and `onRejected(entry, status, data)` report outcomes.
// State: "saved" (nothing waiting), "saving", "offline" (network down, retrying) or "error"
// (server refused for a reason that may pass, e.g. signed out; retrying).
export class Outbox {
  constructor({ storageKey, resolve, onDone, onRejected, onChange }) {
    this.storageKey = storageKey;
    this.resolve = resolve;
    this.onDone = onDone;
    this.onRejected = onRejected;
    this.onChange = onChange;
    this.inFlight = null;
    this.state = "saved";
    this.lastError = "";
    this.failures = 0;
    this.timer = null;
    this.entries = this._load();
    window.addEventListener("online", () => this.kick(true));
    // The browser knows it lost the network before any request fails: say so at once.
    window.addEventListener("offline", () => {
      if (!this.entries.length) return;
      this.state = "offline";
      this.onChange?.(this);
    });
    // What a previous visit left unsent goes first.
    if (this.entries.length) {
      this.state = "saving";
      queueMicrotask(() => this.kick());
    }
  }

  _load() {
    try {
      const raw = localStorage.getItem(this.storageKey);
      const parsed = raw ? JSON.parse(raw) : [];
      return Array.isArray(parsed) ? parsed : [];
    } catch {
      return [];
    }
  }

  _persist() {
    try {
      localStorage.setItem(this.storageKey, JSON.stringify(this.entries));
    } catch {
      // Storage full or disabled: the in-memory queue still sends everything while the page
      // stays open.
    }
  }

  get pending() {
    return this.entries.length;
  }

  push(entry) {
    this.entries.push({ ...entry, id: entry.id || newClientId() });
    this._persist();
    this._changed();
    this.kick();
    return this.entries[this.entries.length - 1].id;
  }

  // Take back an entry that has not been sent yet (local undo). False when it is on the wire.
  remove(id) {
    if (this.inFlight && this.inFlight.id === id) return false;
    const index = this.entries.findIndex((e) => e.id === id);
    if (index < 0) return false;
    this.entries.splice(index, 1);
    this._persist();
    this._changed();
    return true;
  }

  has(id) {
    return this.entries.some((e) => e.id === id);
  }

  update(predicate, patch) {
    for (const entry of this.entries) if (predicate(entry)) Object.assign(entry, patch);
    this._persist();
  }

  // Start sending now (skipping any backoff wait when `now`).
  kick(now = false) {
    if (now && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.inFlight && !this.timer) this._next();
  }

  _changed() {
    if (!this.entries.length && this.state !== "offline") this.state = "saved";
    else if (this.entries.length && this.state === "saved") this.state = "saving";
    this.onChange?.(this);
  }

  _retryLater(state, message) {
    this.failures += 1;
    this.state = state;
    this.lastError = message;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.failures - 1));
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    this.onChange?.(this);
    this.timer = setTimeout(() => {
      this.timer = null;
      this._next();
    }, wait);
  }

  async _next() {
    const entry = this.entries[0];
    if (!entry) {
      this.state = "saved";
      this.failures = 0;
      this.onChange?.(this);
      return;
    }
    const request = this.resolve(entry);
    if (!request) {
      this.entries.shift();
      this._persist();
      this.onRejected?.(entry, 0, { detail: gettext("This item can no longer be sent.") });
      this._changed();
      return this._next();
    }
    this.inFlight = entry;
    // A retry after a failure keeps saying why it waits ("offline", "not saved yet") until it
    // succeeds, instead of flickering to "saving" on every attempt (issue 9, item 6).
    if (navigator.onLine === false) this.state = "offline";
    else if (this.state !== "offline" && this.state !== "error") this.state = "saving";
    this.onChange?.(this);
    let result;
    try {
      result = await api(request.url, { body: request.body });
    } catch (err) {
      this.inFlight = null;
      return this._retryLater("offline", gettext("Offline: labels are kept and will be sent."));
    }
    this.inFlight = null;
    if (result.ok) {
      this.failures = 0;
      this.entries.shift();
      this._persist();
      this.lastError = "";
      this.state = this.entries.length ? "saving" : "saved";
      this.onDone?.(entry, result.data);
    } else if (RETRY_STATUSES.has(result.status)) {
      const why = result.status === 403 || result.status === 401
        ? gettext("Not signed in or not allowed: sign in again in another tab; labels are kept.")
        : interpolate(gettext("Server busy (%(status)s); retrying."), { status: result.status }, true);
      return this._retryLater("error", `${why} ${errorText(result.data, result.status)}`);
    } else {
      // 400 / 404 / 409: the server will never accept this entry (an expired lease, an item
      // already done). Drop it from the queue but keep it in a rejected log, and say so.
      this.entries.shift();
      this._persist();
      this._keepRejected(entry, result);
      this.onRejected?.(entry, result.status, result.data);
    }
    this._changed();
    return this._next();
  }

  _keepRejected(entry, result) {
    try {
      const key = `${this.storageKey}:rejected`;
      const log = JSON.parse(localStorage.getItem(key) || "[]").slice(-99);
      log.push({ entry, status: result.status, data: result.data, at: new Date().toISOString() });
      localStorage.setItem(key, JSON.stringify(log));
    } catch {
      // Nothing more to do: the page has already shown the error.
    }
  }
}

// The small "saving…/saved/offline" pill.
export function renderSaveState(element, outbox) {
  const count = { count: outbox.pending };
  const labels = {
    saved: gettext("Saved"),
    saving: interpolate(gettext("Saving… (%(count)s)"), count, true),
    offline: interpolate(gettext("Offline: %(count)s waiting"), count, true),
    error: interpolate(gettext("Not saved yet: %(count)s waiting"), count, true),
  };
  element.dataset.state = outbox.state;
  element.textContent = labels[outbox.state] ?? outbox.state;
  element.title = outbox.lastError || "";
}
