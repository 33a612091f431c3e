// Single-image labeling: one key per class or sub-category, the next images already decoded,
// labels saved in the background through the outbox (see outbox.js).
//
// Cards: cards[0] is on screen, the rest are claimed and prefetched. A card whose label was
// undone on the server waits for the fresh lease the undo returns (lease === null); it can be
// labeled at once, and the outbox fills the lease in before sending (the undo goes first).

import {
  api, errorText, hotkeyMap, ignoreKey, newClientId, NetworkError, Outbox,
  preference, renderSaveState, setPreference,
} from "./outbox.js";

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
let history = []; // {entryId, card}: what Z walks back
let fetching = false;
let exhausted = false;
let recheckTimer = null;
let shownAt = performance.now();
let fatal = "";

// --- Outbox --------------------------------------------------------------------------------
const outbox = new Outbox({
  storageKey: `imageclean:outbox:${config.userId}:${config.queueId}`,
  resolve(entry) {
    if (entry.type === "undo") return { url: config.urls.undo, body: { count: entry.count } };
    const lease = entry.lease ?? freshLeaseByItem.get(entry.item);
    if (!lease) return null;
    const template = entry.type === "skip" ? config.urls.skip : config.urls.submit;
    return { url: template.replace("/0/", `/${lease}/`), body: entry.body || {} };
  },
  onDone(entry, data) {
    if (entry.type === "undo") adoptUndoneLeases(entry, data);
    if (data && data.progress) renderProgress(data.progress);
    scheduleStats();
  },
  onRejected(entry, status, data) {
    history = history.filter((h) => h.entryId !== entry.id);
    if (entry.type === "skip") return; // a skip the server no longer needs (lease gone) is harmless
    if (entry.type === "undo" && entry.item == null) {
      showFlash(gettext("Nothing of yours to undo in this queue."), "", 2500);
      return;
    }
    if (entry.type === "undo" || entry.lease == null) {
      // No fresh lease will come for this item: stop showing it.
      cards = cards.filter((c) => !(c.item === entry.item && c.lease == null));
      show();
      refill();
    }
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
function makeCard(payload) {
  const img = new Image();
  img.decoding = "async";
  img.alt = interpolate(gettext("Image %(id)s to label"), { id: payload.image.id }, true);
  img.draggable = false;
  const card = { lease: payload.lease, item: payload.item, image: payload.image, img, failed: false };
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

async function refill() {
  if (fetching || fatal || cards.length > REFILL_BELOW) return;
  if (exhausted && recheckTimer) return;
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
    const fresh = data.leases.filter((l) => !seenLeases.has(l.lease));
    for (const l of fresh) seenLeases.add(l.lease);
    const wasEmpty = cards.length === 0;
    cards.push(...fresh.map(makeCard));
    exhausted = fresh.length === 0;
    if (exhausted) retryRefill(EMPTY_RECHECK_MS);
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
  if (entry.item == null) {
    // An undo with no local history (after a reload): show what the server gave back.
    const fresh = leases.filter((l) => !seenLeases.has(l.lease));
    for (const l of fresh) seenLeases.add(l.lease);
    cards.unshift(...fresh.map(makeCard));
    show();
    return;
  }
  for (const l of leases) {
    seenLeases.add(l.lease);
    freshLeaseByItem.set(l.item, l.lease);
    outbox.update((e) => e.lease == null && e.item === l.item && e.type !== "undo", { lease: l.lease });
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

function placeholder(title, text) {
  const div = document.createElement("div");
  div.className = "placeholder";
  div.setAttribute("role", "status");
  const h = document.createElement("h2");
  h.textContent = title;
  const p = document.createElement("p");
  p.textContent = text;
  div.append(h, p);
  return div;
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

// The claim's counts may be up to 2 s old (the server reuses them: NEXT_PROGRESS_MAX_AGE_S);
// they never replace fresher ones from a save or the stats, or the counter would step back.
let freshProgressAt = -Infinity;
function renderProgress(progress, { recent = false } = {}) {
  if (!progress) return;
  if (recent && performance.now() - freshProgressAt < 3000) return;
  if (!recent) freshProgressAt = performance.now();
  $("progress-done").textContent = progress.done;
  $("progress-total").textContent = progress.total;
}

let statsTimer = null;
function scheduleStats(ms = 1500) {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(loadStats, ms);
}

async function loadStats() {
  try {
    const { ok, data } = await api(config.urls.stats, { method: "GET" });
    if (ok) {
      $("rate").textContent = data.stats.per_minute.toFixed(1);
      $("own-total").textContent = data.stats.total;
      renderProgress(data.progress);
    }
  } catch {
    // Throughput is informative only; the next poll tries again.
  }
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
  history.push({ entryId, card });
  if (history.length > 200) history = history.slice(-200);
  cards.shift();
  show();
  showFlash(action.name, action.value === schema.positive ? "positive" : "", 900, card.img.src);
  refill();
}

function skip() {
  const card = cards[0];
  if (!card) return;
  outbox.push({ type: "skip", lease: card.lease, item: card.item });
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
  if (outbox.remove(last.entryId)) {
    // Not sent yet: take it back locally; the lease is still ours.
    cards.unshift(last.card);
  } else {
    outbox.push({ type: "undo", count: 1, item: last.card.item });
    cards.unshift({ ...last.card, lease: null, failed: false });
  }
  show();
  showFlash(gettext("Undone: label it again"));
}

// --- View toggles ---------------------------------------------------------------------------------
function setBlur(on) {
  document.body.classList.toggle("blur-on", on);
  $("toggle-blur").setAttribute("aria-pressed", String(on));
  setPreference(`blur:${config.projectSlug}`, on);
}

function setPixelated(on) {
  document.body.classList.toggle("pixelated", on);
  $("toggle-pixel").setAttribute("aria-pressed", String(on));
  setPreference("pixelated", on);
}

function toggleHelp() {
  if (help.open) help.close();
  else help.showModal();
}

// --- Wiring ----------------------------------------------------------------------------------------
document.addEventListener("keydown", (event) => {
  if (ignoreKey(event)) return;
  if (help.open) {
    if (event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return;
  }
  if (event.ctrlKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const act = () => {
    if (hotkeys.has(key)) label(hotkeys.get(key));
    else if (key === " " || key === "s") skip();
    else if (key === "z" || key === "u") undo();
    else if (key === "?") toggleHelp();
    else if (key === "b" && !hotkeys.has("b")) setBlur(!document.body.classList.contains("blur-on"));
    else if (key === "p" && !hotkeys.has("p")) setPixelated(!document.body.classList.contains("pixelated"));
    else if (key === "r" && !hotkeys.has("r")) stage.classList.toggle("revealed");
    else return false;
    return true;
  };
  if (event.repeat) {
    // A held key never labels a run of images.
    if (hotkeys.has(key) || [" ", "s", "z", "u"].includes(key)) event.preventDefault();
    return;
  }
  if (act()) event.preventDefault();
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
$("toggle-blur").addEventListener("click", () => setBlur(!document.body.classList.contains("blur-on")));
$("toggle-pixel").addEventListener("click", () => setPixelated(!document.body.classList.contains("pixelated")));
$("open-help").addEventListener("click", toggleHelp);
stage.addEventListener("click", () => stage.classList.toggle("revealed"));

setBlur(preference(`blur:${config.projectSlug}`, config.blurDefault));
setPixelated(preference("pixelated", false));
show();
refill();
loadStats();

// For tests and the curious: how many labels are still waiting to be sent.
window.imageclean = { outbox, pending: () => outbox.pending, state: () => outbox.state };
