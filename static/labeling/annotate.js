// Single-image labeling: one key per class or sub-category, the next images already decoded,
// labels saved in the background through the outbox (see outbox.js).
//
// Undo (Z) walks back through what this page did, labels and skips alike: the image comes back
// with the answer that was given highlighted (the key bar's button and a note), to be answered
// again. A label not sent yet is taken back locally; a saved one is retracted on the server
// (which gives a fresh lease); a saved skip is walked back by an unskip. "My recent labels" (L)
// lists the person's own latest answers; a current one can be changed from there.
//
// Cards: cards[0] is on screen, the rest are claimed and prefetched. A label is sent together
// with the claim of the next image (submit-and-claim, POST .../submit-next/), so at a steady pace
// each label costs one round trip; `next` is asked only when nothing else will claim. A card
// whose label was undone on the server waits for the fresh lease the undo returns (lease ===
// null); it can be labeled at once, and the outbox fills the lease in before sending (the undo
// goes first).

import { api, errorText, newClientId, NetworkError } from "./api.js";
import { renderProgress, loadStats as fetchStats, placeholder, toggleDialog } from "./counters.js";
import { bindKeys, hotkeyMap } from "./keys.js";
import { Exposure } from "./exposure.js";
import { Outbox, renderSaveState } from "./outbox.js";
import { Preferences, setupProtection, toggleProtection } from "./prefs.js";
import { setupRecent } from "./recent.js";

const config = JSON.parse(document.getElementById("labeling-config").textContent);
const schema = config.schema;
const hotkeys = hotkeyMap(schema);
const PREFETCH = config.prefetch;
const REFILL_BELOW = Math.max(2, Math.floor(PREFETCH / 2));
const EMPTY_RECHECK_MS = 15000;

const $ = (id) => document.getElementById(id);
const stage = $("stage");
const flash = $("flash");
const saveState = $("save-state");
const help = $("help");

let cards = [];
const seenLeases = new Set();
const freshLeaseByItem = new Map();
let history = []; // {entryId, card, kind: "label" | "skip", action}: what Z walks back
let fetching = false;
let exhausted = false;
let recheckTimer = null;
let shownAt = performance.now();
let fatal = "";
// The daily cap on positive-class images stops the page like any other stop (exposure.js).
const exposure = new Exposure(config.exposure, {
  onStop(message) {
    fatal = message;
    show();
  },
});

// --- Outbox --------------------------------------------------------------------------------
const outbox = new Outbox({
  storageKey: `imageclean:outbox:${config.userId}:${config.queueId}`,
  resolve(entry) {
    if (entry.type === "undo") {
      return { url: config.urls.undo, body: entry.labels ? { labels: entry.labels } : { count: entry.count } };
    }
    if (entry.type === "unskip") return { url: config.urls.unskip.replace("/0/", `/${entry.lease}/`), body: {} };
    const lease = entry.lease ?? freshLeaseByItem.get(entry.item);
    if (!lease) return null;
    if (entry.type === "submit") {
      // One round trip: the label, and the claim that keeps PREFETCH images ready (what
      // refill() would ask `next` for, less this label's lease, which the submit completes).
      const count = Math.max(0, Math.min(50, knownActiveLeases() - 1 + PREFETCH - cards.length));
      return { url: config.urls.submitNext, body: { entries: [{ ...(entry.body || {}), lease }], count } };
    }
    return { url: config.urls.skip.replace("/0/", `/${lease}/`), body: entry.body || {} };
  },
  onDone(entry, data) {
    if (entry.type === "undo" || entry.type === "unskip") adoptUndoneLeases(entry, data);
    if (entry.type === "submit" && data) adoptClaimed(data);
    else if (data && data.progress) renderProgress(data.progress);
    scheduleStats();
  },
  onRejected(entry, status, data) {
    history = history.filter((h) => h.entryId !== entry.id);
    if (entry.type === "skip") return; // a skip the server no longer needs (lease gone) is harmless
    if (entry.type === "undo" && entry.item == null) {
      showFlash(gettext("Nothing of yours to undo in this queue."), "", 2500);
      return;
    }
    if (entry.type === "undo" || entry.type === "unskip" || entry.lease == null) {
      // No fresh lease will come for this item: stop showing it.
      cards = cards.filter((c) => !(c.item === entry.item && c.lease == null));
      show();
      refill();
    }
    refill(); // the claim that came with the submit did not happen
    const why = status || gettext("no lease");
    showFlash(
      interpolate(gettext("Not saved (%(why)s): %(error)s"), { why, error: errorText(data, status) }, true),
      "error",
      6000,
    );
  },
  onChange(box) {
    renderSaveState(saveState, box);
  },
});
// Leases that restored outbox entries still hold are not new work: never show them twice.
for (const entry of outbox.entries) if (entry.lease) seenLeases.add(entry.lease);
renderSaveState(saveState, outbox);

// --- Cards and prefetch -------------------------------------------------------------------------
function makeCard(payload, previous = null) {
  const img = new Image();
  img.decoding = "async";
  img.alt = interpolate(gettext("Image %(id)s to label"), { id: payload.image.id }, true);
  img.draggable = false;
  const card = { lease: payload.lease, item: payload.item, image: payload.image, img, failed: false, previous };
  img.addEventListener("error", () => {
    card.failed = true;
    if (cards[0] === card) show();
  });
  img.src = payload.image.url;
  return card;
}

function knownActiveLeases() {
  // Leases the server still counts as ours: on screen, queued here, or waiting in the outbox.
  let n = cards.filter((c) => c.lease).length;
  for (const entry of outbox.entries) if (entry.type !== "undo") n += 1;
  return n;
}

// A label waiting in the outbox claims the next items when it is sent (submit-and-claim), so
// `next` is asked only when nothing on the way will: the screen is empty, or the outbox cannot
// reach the server now.
function claimOnTheWay() {
  return cards.length > 0 && submitsOnTheWay();
}

function submitsOnTheWay() {
  return outbox.state !== "offline" && outbox.state !== "error"
    && outbox.entries.some((e) => e.type === "submit");
}

function adoptLeases(leases) {
  const fresh = leases.filter((l) => !seenLeases.has(l.lease));
  for (const l of fresh) seenLeases.add(l.lease);
  const wasEmpty = cards.length === 0;
  cards.push(...fresh.map((l) => makeCard(l)));
  if (wasEmpty && fresh.length) show();
  return fresh.length;
}

// The answer of a submit-and-claim: the claimed leases join the cards as refill()'s would.
function adoptClaimed(data) {
  if (data.progress) renderProgress(data.progress, { recent: true });
  if (data.stopped) {
    fatal = data.stopped;
    show();
    return;
  }
  const leases = data.leases || [];
  const added = adoptLeases(leases);
  // Nothing new although images were asked for: the queue may be empty; refill() knows how
  // to say so and to check again later.
  if (!added && cards.length <= REFILL_BELOW) refill();
}

async function refill() {
  if (fetching || fatal || cards.length > REFILL_BELOW) return;
  if (exhausted && recheckTimer) return;
  if (claimOnTheWay()) return;
  fetching = true;
  const count = Math.min(50, knownActiveLeases() + PREFETCH - cards.length);
  try {
    const { ok, status, data } = await api(config.urls.next, { body: { count } });
    if (!ok) {
      // 400 (a paused queue), 401 (signed out), 403, 404: asking again will not help; 5xx
      // and 429 may pass.
      if ([400, 401, 403, 404].includes(status)) fatal = errorText(data, status);
      else retryRefill(3000);
      return;
    }
    renderProgress(data.progress, { recent: true });
    const wasEmpty = cards.length === 0;
    // An empty answer is not an empty queue while a submit is on its way: its claim may take
    // the last items this `next` raced it for. adoptClaimed() asks again once it is answered,
    // so the page says "Loading" meanwhile instead of flashing "This queue is empty".
    const added = adoptLeases(data.leases);
    exhausted = added === 0 && !submitsOnTheWay();
    if (!added) retryRefill(EMPTY_RECHECK_MS);
    if (wasEmpty) show();
  } catch (err) {
    if (!(err instanceof NetworkError)) throw err;
    retryRefill(3000);
  } finally {
    fetching = false;
    if (!cards.length) show();
  }
}

function retryRefill(ms) {
  clearTimeout(recheckTimer);
  recheckTimer = setTimeout(() => {
    recheckTimer = null;
    refill();
  }, ms);
}

function adoptUndoneLeases(entry, data) {
  const leases = (data && data.leases) || [];
  const undone = new Map(((data && data.undone) || []).map((u) => [u.item, u]));
  if (entry.item == null) {
    // An undo with no local history (after a reload, or a change from the recent list): show
    // what the server gave back, with the answer it took back.
    const fresh = leases.filter((l) => !seenLeases.has(l.lease));
    for (const l of fresh) seenLeases.add(l.lease);
    cards.unshift(...fresh.map((l) => makeCard(l, undone.get(l.item) || null)));
    show();
    return;
  }
  for (const l of leases) {
    seenLeases.add(l.lease);
    freshLeaseByItem.set(l.item, l.lease);
    outbox.update((e) => e.lease == null && e.item === l.item && e.type !== "undo" && e.type !== "unskip", { lease: l.lease });
    for (const card of cards) if (card.item === l.item && card.lease == null) card.lease = l.lease;
  }
  if (!leases.some((l) => l.item === entry.item)) {
    // The server undid something else (or nothing): do not keep a card it gave no lease for.
    cards = cards.filter((c) => !(c.item === entry.item && c.lease == null));
    showFlash(gettext("Undo: the server had no label of yours to take back here."), "error", 4000);
    show();
  }
}

// --- Rendering -----------------------------------------------------------------------------------
function show() {
  stage.classList.remove("revealed");
  const card = cards[0];
  renderPrevious(card);
  let content;
  if (fatal) {
    content = placeholder(gettext("Labeling stopped"), fatal);
  } else if (!card) {
    content = fetching || !exhausted
      ? placeholder(gettext("Loading…"), gettext("Fetching the next images."))
      : placeholder(
          gettext("This queue is empty"),
          gettext("Nothing is left for you to label here. New items appear when the model selects them; this page checks again every 15 seconds."),
        );
  } else if (card.failed) {
    content = placeholder(gettext("This image could not be loaded"), gettext("Press Space to skip it."));
  } else {
    content = card.img;
  }
  stage.replaceChildren(content, flash);
  stage.setAttribute("aria-busy", card ? "false" : "true");
  // Nothing on screen (an empty or stopped queue): the label buttons cannot label anything.
  // Undo stays: it brings an image back. A broken image can still be skipped.
  for (const button of document.querySelectorAll(".keybar [data-hotkey]")) {
    const key = button.dataset.hotkey;
    if (key !== "undo") button.disabled = !card || (card.failed && key !== "skip");
  }
  // data-image: the id for scripts and tests, whatever the language of the text.
  $("current-label").textContent = card ? interpolate(gettext("Image %(id)s"), { id: card.image.id }, true) : "";
  $("current-label").dataset.image = card ? String(card.image.id) : "";
  shownAt = performance.now();
}

// An image brought back by undo: its earlier answer is highlighted in the key bar and named.
function renderPrevious(card) {
  const previous = card && card.previous;
  const note = $("previous-answer");
  for (const button of document.querySelectorAll(".keybar [data-hotkey]")) {
    const action = hotkeys.get(button.dataset.hotkey);
    const was = previous && (previous.skipped
      ? button.dataset.hotkey === "skip"
      : action && action.value === previous.value && action.subcategory === (previous.subcategory || ""));
    button.classList.toggle("previous", Boolean(was));
  }
  if (!previous) {
    note.hidden = true;
    note.textContent = "";
    return;
  }
  note.hidden = false;
  note.textContent = previous.skipped
    ? gettext("Undone: you skipped this image. Answer it or skip it again.")
    : interpolate(gettext("Undone: you answered “%(answer)s”. Answer again."), { answer: answerName(previous) }, true);
}

function answerName(previous) {
  for (const action of hotkeys.values()) {
    if (action.value === previous.value && action.subcategory === (previous.subcategory || "")) return action.name;
  }
  return previous.value;
}

let flashTimer = null;
// `imageSrc`: the image the message is about, shown small beside it; a label's confirmation
// appears over the next image, so it carries a thumbnail of the image it confirms.
function showFlash(text, kind = "", ms = 700, imageSrc = "") {
  flash.replaceChildren();
  if (imageSrc) {
    const thumb = new Image();
    thumb.alt = "";
    thumb.src = imageSrc;
    flash.append(thumb);
  }
  flash.append(text);
  flash.className = `flash show ${kind}`;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => flash.classList.remove("show"), ms);
}

let statsTimer = null;
function scheduleStats(ms = 1500) {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(loadStats, ms);
}

async function loadStats() {
  await fetchStats(config.urls.stats);
  scheduleStats(20000);
}

// --- Actions -------------------------------------------------------------------------------------
function label(action) {
  const card = cards[0];
  if (!card || card.failed) return;
  const body = {
    value: action.value,
    subcategory: action.subcategory,
    duration_ms: Math.round(performance.now() - shownAt),
    client_id: newClientId(),
  };
  const entryId = outbox.push({ type: "submit", lease: card.lease, item: card.item, body });
  remember({ entryId, card, kind: "label", action });
  exposure.record([action.value]);
  cards.shift();
  show();
  showFlash(action.name, action.value === schema.positive ? "positive" : "", 900, card.img.src);
  refill();
}

function remember(step) {
  history.push(step);
  if (history.length > 200) history = history.slice(-200);
}

function skip() {
  const card = cards[0];
  if (!card) return;
  const entryId = outbox.push({ type: "skip", lease: card.lease, item: card.item });
  remember({ entryId, card, kind: "skip" });
  cards.shift();
  show();
  showFlash(gettext("Skipped"));
  refill();
}

function undo() {
  const last = history.pop();
  if (!last) {
    // Nothing labeled on this page yet (or it was reloaded): ask the server to take back the
    // last label it holds from this person in this queue.
    outbox.push({ type: "undo", count: 1, item: null });
    showFlash(gettext("Undoing your last saved label…"), "", 1000);
    return;
  }
  const previous = last.kind === "skip"
    ? { skipped: true }
    : { value: last.action.value, subcategory: last.action.subcategory };
  if (outbox.remove(last.entryId)) {
    // Not sent yet: take it back locally; the lease is still ours.
    cards.unshift({ ...last.card, previous });
  } else if (last.kind === "skip") {
    outbox.push({ type: "unskip", lease: last.card.lease, item: last.card.item });
    cards.unshift({ ...last.card, lease: null, failed: false, previous });
  } else {
    outbox.push({ type: "undo", count: 1, item: last.card.item });
    cards.unshift({ ...last.card, lease: null, failed: false, previous });
  }
  show();
  showFlash(last.kind === "skip" ? gettext("Skip undone") : gettext("Undone: label it again"));
}

// A current label chosen in "my recent labels": taken back on the server, shown first again.
function change(row) {
  outbox.push({ type: "undo", labels: [row.id], item: null });
  showFlash(gettext("Bringing the image back…"), "", 1000);
}

// --- View -----------------------------------------------------------------------------------------
const prefs = new Preferences({ url: config.urls.preferences, initial: config.preferences, slug: config.projectSlug });
setupProtection(prefs, { select: $("protection"), intro: $("protection-intro") });

function reveal() {
  if (prefs.protection === "session") {
    prefs.revealKept = !prefs.revealKept;
    stage.classList.toggle("revealed", prefs.revealKept);
  } else {
    stage.classList.toggle("revealed");
  }
}

const recent = setupRecent({ dialog: $("recent"), url: config.urls.recent, schema, onChange: change });

// --- Wiring ----------------------------------------------------------------------------------------
bindKeys({
  pageKeys: config.keys,
  hotkeys,
  isBlocked(event) {
    // While a dialog is open the page's keys rest; ? closes the help.
    if (help.open && event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return help.open || $("recent").open;
  },
  onHotkey: label,
  handlers: {
    skip,
    undo,
    help: () => toggleDialog(help),
    protection: () => toggleProtection(prefs),
    pixels: () => prefs.set({ pixelated: !prefs.values.pixelated }),
    reveal,
    recent: () => recent.toggle(),
    other: () => false,
  },
});

for (const button of document.querySelectorAll("[data-hotkey]")) {
  // Clicks must not move focus to the button (Space would then press it as well as skip).
  button.addEventListener("mousedown", (e) => e.preventDefault());
  button.addEventListener("click", () => {
    const key = button.dataset.hotkey;
    if (key === "skip") skip();
    else if (key === "undo") undo();
    else if (hotkeys.has(key)) label(hotkeys.get(key));
  });
}
$("toggle-pixel").addEventListener("click", () => prefs.set({ pixelated: !prefs.values.pixelated }));
prefs.onChange(() => $("toggle-pixel").setAttribute("aria-pressed", String(Boolean(prefs.values.pixelated))));
$("toggle-pixel").setAttribute("aria-pressed", String(Boolean(prefs.values.pixelated)));
$("open-help").addEventListener("click", () => toggleDialog(help));
$("open-recent").addEventListener("mousedown", (e) => e.preventDefault());
$("open-recent").addEventListener("click", () => recent.toggle());
stage.addEventListener("click", reveal);

show();
refill();
loadStats();

// For tests and the curious: how many labels are still waiting to be sent.
window.imageclean = { outbox, pending: () => outbox.pending, state: () => outbox.state };
