// Grid labeling: a page of thumbnails that all start as the queue's default class. The
// annotator flips the few positives and submits the whole page in one request; the next page
// is claimed and its thumbnails downloaded while they work on this one.
//
// Keys: arrows move the focus ring; Enter, Space, a click or the positive class's hotkey flips
// the focused tile; a class hotkey sets that class; a sub-category hotkey sets "positive, with
// this sub-category"; Ctrl+Enter submits the page; R reveals the whole page (protection);
// Z reopens the page submitted last, with the answers given, to change and submit again.
//
// Every tile must have been on screen before a page can be submitted: the page is fitted to
// the window when the tiles stay large enough to judge, and otherwise a submit with tiles
// never scrolled into view is refused, naming them.

import { api, errorText, newClientId, NetworkError } from "./api.js";
import { renderProgress, loadStats as fetchStats, placeholder, toggleDialog } from "./counters.js";
import { bindKeys, hotkeyMap, nameOf, subName } from "./keys.js";
import { Outbox, renderSaveState } from "./outbox.js";
import { Exposure } from "./exposure.js";
import { Preferences, setupProtection, toggleProtection } from "./prefs.js";
import { setupRecent } from "./recent.js";

const config = JSON.parse(document.getElementById("labeling-config").textContent);
const schema = config.schema;
const hotkeys = hotkeyMap(schema);
const PAGE_SIZE = config.pageSize;
const DEFAULT = schema.default || schema.classes[0].key;
const POSITIVE = schema.positive;
// What a positive tile flips to: the common class (a confirm queue pre-selects the positive).
const COMMON = schema.common || DEFAULT;
const MIN_FIT_TILE_PX = 120; // below this a thumbnail is too small to judge: scroll instead
const GAP_PX = 12;

const $ = (id) => document.getElementById(id);
const tilesEl = $("tiles");
const statusEl = $("grid-status");
const saveState = $("save-state");
const help = $("help");

let page = []; // tiles on screen
let reopened = false; // the page on screen is one submitted before, reopened
let nextPage = null; // lease payloads claimed for the next page (thumbnails prefetched)
const stashed = []; // pages put aside while an earlier one is reopened (their leases held)
const submitted = []; // {entryId, tiles, labelIds}: pages Z can reopen, newest last
let focusIndex = 0;
let fetching = false;
let shownAt = performance.now();
const seenLeases = new Set();
// Set when labeling must stop here (the daily exposure cap, a pause, a refused claim): the
// page says why and claims nothing more.
let stopped = "";
const exposure = new Exposure(config.exposure, {
  onStop(message) {
    stopped = message;
    if (!page.length) showNextPage();
  },
});

const outbox = new Outbox({
  storageKey: `imageclean:outbox:${config.userId}:${config.queueId}:grid`,
  resolve(entry) {
    return { url: config.urls.batch, body: entry.body };
  },
  onDone(entry, data) {
    const record = submitted.find((s) => s.entryId === entry.id);
    if (record && data && data.labels) record.labelIds = data.labels.map((l) => l.id);
    if (data && data.progress) renderProgress(data.progress);
    fetchStats(config.urls.stats);
    // Only now are the saved page's leases closed on the server, so a claim returns new work.
    if (!nextPage) prefetchNextPage();
  },
  onRejected(entry, status, data) {
    flashStatus(
      interpolate(gettext("A page was NOT saved (%(status)s): %(error)s"), { status, error: errorText(data, status) }, true),
      true,
    );
  },
  onChange(box) {
    renderSaveState(saveState, box);
  },
});
for (const entry of outbox.entries) for (const e of entry.body.entries) seenLeases.add(e.lease);
renderSaveState(saveState, outbox);

const prefs = new Preferences({ url: config.urls.preferences, initial: config.preferences, slug: config.projectSlug });
setupProtection(prefs, { select: $("protection"), intro: $("protection-intro") });

async function claim(count) {
  const { ok, status, data } = await api(config.urls.next, { body: { count: Math.min(50, count) } });
  if (!ok) throw Object.assign(new Error(errorText(data, status)), { status });
  renderProgress(data.progress, { recent: true });
  const fresh = data.leases.filter((l) => !seenLeases.has(l.lease));
  for (const l of fresh) seenLeases.add(l.lease);
  return fresh;
}

function pendingLeaseCount() {
  let n = page.length;
  for (const entry of outbox.entries) n += entry.body.entries.length;
  for (const p of stashed) n += p.length;
  return n;
}

function prefetchThumbs(leases) {
  return leases.map((l) => {
    const img = new Image();
    img.decoding = "async";
    img.src = l.image.thumb_url;
    return { ...l, img };
  });
}

async function prefetchNextPage() {
  if (fetching || nextPage || stopped) return;
  fetching = true;
  try {
    const fresh = await claim(pendingLeaseCount() + PAGE_SIZE);
    nextPage = prefetchThumbs(fresh.slice(0, PAGE_SIZE));
  } catch (err) {
    if (err instanceof NetworkError) setTimeout(prefetchNextPage, 3000);
    // 400 (a paused queue), 401, 403 (a paused person, the exposure cap), 404: asking again
    // will not help.
    else if ([400, 401, 403, 404].includes(err.status)) stopped = String(err.message || err);
    else flashStatus(String(err.message || err), true);
  } finally {
    fetching = false;
  }
  if (!page.length) showNextPage();
}

function showNextPage() {
  if (stopped) {
    page = [];
    renderEmpty(gettext("Labeling stopped"), stopped);
    return;
  }
  if (stashed.length) {
    // A page put aside by a reopen comes back as it was left.
    showPage(stashed.pop(), { restored: true });
    return;
  }
  if (!nextPage) {
    renderEmpty(gettext("Loading…"), gettext("Fetching the next page."));
    prefetchNextPage();
    return;
  }
  const leases = nextPage;
  nextPage = null;
  if (!leases.length) {
    page = [];
    renderEmpty(
      gettext("This queue is empty"),
      gettext("Nothing is left for you to label here. This page checks again every 15 seconds."),
    );
    setTimeout(() => {
      if (!page.length) prefetchNextPage();
    }, 15000);
    return;
  }
  showPage(leases.map((l) => ({ ...l, value: DEFAULT, subcategory: "" })));
  // The next page is claimed now only if nothing is waiting to be saved; otherwise right after
  // the save (see onDone), when the server no longer counts the saved leases as ours.
  if (!outbox.pending) prefetchNextPage();
}

function showPage(tiles, { reopen = false, restored = false } = {}) {
  page = tiles.map((t, index) => ({ ...t, index, seen: false }));
  reopened = reopen;
  renderPage();
  shownAt = performance.now();
  if (reopen) {
    flashStatus(gettext("Page reopened with your answers: change any, then submit it again (Ctrl+Enter)."));
  } else if (restored) {
    flashStatus(gettext("Back to the page you were working on."));
  }
}

function tileLabel(tile) {
  const cls = nameOf(schema, tile.value);
  return tile.subcategory ? `${cls} · ${subName(schema, tile.subcategory)}` : cls;
}

// --- Seeing every tile ---------------------------------------------------------------------------
const observer = new IntersectionObserver(
  (records) => {
    for (const record of records) {
      if (!record.isIntersecting) continue;
      const tile = page.find((t) => t.el === record.target);
      if (tile) {
        tile.seen = true;
        tile.el.dataset.seen = "true";
        observer.unobserve(record.target);
      }
    }
  },
  { threshold: 0.6 },
);

function unseen() {
  return page.filter((t) => !t.seen);
}

// Fit the page to the window when every tile stays at least MIN_FIT_TILE_PX; otherwise the page
// scrolls (a phone) and submit waits until every tile was on screen.
function fitTiles() {
  tilesEl.style.gridTemplateColumns = "";
  tilesEl.classList.remove("fitted");
  const n = page.length;
  if (!n || window.innerWidth < 700) return;
  const top = tilesEl.getBoundingClientRect().top + window.scrollY;
  const height = window.innerHeight - top - 16;
  const width = tilesEl.clientWidth;
  let best = 0;
  let bestCols = 0;
  for (let cols = 1; cols <= n; cols += 1) {
    const rows = Math.ceil(n / cols);
    const size = Math.min((width - GAP_PX * (cols - 1)) / cols, (height - GAP_PX * (rows - 1)) / rows);
    if (size > best) {
      best = size;
      bestCols = cols;
    }
  }
  if (best < MIN_FIT_TILE_PX) return;
  tilesEl.classList.add("fitted");
  tilesEl.style.gridTemplateColumns = `repeat(${bestCols}, ${Math.floor(best)}px)`;
}
window.addEventListener("resize", fitTiles);

function renderPage() {
  tilesEl.replaceChildren();
  tilesEl.classList.toggle("revealed", prefs.revealKept);
  $("submit-page").disabled = false;
  for (const tile of page) {
    const el = document.createElement("div");
    el.className = "tile";
    el.setAttribute("role", "checkbox");
    el.tabIndex = -1;
    el.dataset.image = String(tile.image.id);
    if (reopened) el.dataset.reopened = "true";
    const img = tile.img;
    img.alt = "";
    img.draggable = false;
    const badge = document.createElement("span");
    badge.className = "badge";
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = String(tile.index + 1);
    el.append(img, badge, num);
    el.addEventListener("click", () => {
      focusTile(tile.index);
      flip(tile);
    });
    tile.el = el;
    updateTile(tile);
    tilesEl.append(el);
  }
  $("page-size").textContent = page.length;
  fitTiles();
  for (const tile of page) observer.observe(tile.el);
  focusTile(0);
  statusEl.classList.remove("error");
  statusEl.textContent = interpolate(
    ngettext(
      "%(count)s image, “%(name)s” until you change it.",
      "%(count)s images, all “%(name)s” until you change them.",
      page.length,
    ),
    { count: page.length, name: nameOf(schema, DEFAULT) },
    true,
  );
}

function updateTile(tile) {
  const positive = tile.value === POSITIVE;
  tile.el.dataset.positive = String(positive);
  tile.el.dataset.changed = String(tile.value !== DEFAULT);
  tile.el.setAttribute("aria-checked", String(positive));
  tile.el.setAttribute(
    "aria-label",
    interpolate(
      gettext("Image %(n)s of %(count)s: %(label)s"),
      { n: tile.index + 1, count: page.length, label: tileLabel(tile) },
      true,
    ),
  );
  tile.el.querySelector(".badge").textContent = tileLabel(tile);
  $("positives").textContent = page.filter((t) => t.value === POSITIVE).length;
}

function renderEmpty(title, text) {
  tilesEl.replaceChildren(placeholder(title, text));
  $("submit-page").disabled = true;
  $("page-size").textContent = "0";
  $("positives").textContent = "0";
}

function focusTile(index) {
  if (!page.length) return;
  focusIndex = Math.max(0, Math.min(page.length - 1, index));
  page.forEach((t, i) => (t.el.tabIndex = i === focusIndex ? 0 : -1));
  page[focusIndex].el.focus();
}

function columns() {
  if (page.length < 2) return 1;
  const top = page[0].el.offsetTop;
  const n = page.findIndex((t) => t.el.offsetTop !== top);
  return n === -1 ? page.length : n;
}

function flip(tile) {
  if (tile.value === POSITIVE) set(tile, { value: COMMON, subcategory: "" });
  else set(tile, { value: POSITIVE, subcategory: "" });
}

function set(tile, { value, subcategory }) {
  tile.value = value;
  tile.subcategory = subcategory;
  updateTile(tile);
}

function submitPage() {
  if (!page.length) return;
  const missing = unseen();
  if (missing.length) {
    flashStatus(
      interpolate(
        ngettext(
          "Not submitted: image %(numbers)s has not been on screen yet. Scroll to it first.",
          "Not submitted: images %(numbers)s have not been on screen yet. Scroll to them first.",
          missing.length,
        ),
        { numbers: missing.map((t) => t.index + 1).join(", ") },
        true,
      ),
      true,
    );
    return;
  }
  const duration = Math.round((performance.now() - shownAt) / page.length);
  const entries = page.map((t) => ({
    lease: t.lease,
    value: t.value,
    subcategory: t.subcategory,
    duration_ms: duration,
    client_id: newClientId(),
  }));
  const entryId = outbox.push({ type: "batch", body: { entries } });
  exposure.record(entries.map((e) => e.value));
  submitted.push({ entryId, tiles: page.map(({ el, seen, index, ...rest }) => rest), labelIds: null });
  if (submitted.length > 20) submitted.shift();
  const flipped = entries.filter((e) => e.value !== DEFAULT).length;
  page = [];
  showNextPage();
  flashStatus(
    interpolate(
      gettext("Page sent: %(count)s labels, %(flipped)s changed."),
      { count: entries.length, flipped },
      true,
    ),
  );
}

// Z: the page submitted last comes back with its answers. Not sent yet: taken out of the
// outbox. Saved: its labels are taken back on the server (undo of those labels), which gives
// fresh leases on the same images. The page on screen is put aside and comes back after.
async function reopenLast() {
  const last = submitted.pop();
  if (!last) {
    flashStatus(gettext("No page of this visit to reopen. Your recent labels (L) list what you saved before."), true);
    return;
  }
  let tiles;
  if (outbox.remove(last.entryId)) {
    tiles = last.tiles;
  } else if (!last.labelIds) {
    submitted.push(last);
    flashStatus(gettext("That page is still being saved; try again in a moment."), true);
    return;
  } else {
    let result;
    try {
      result = await api(config.urls.undo, { body: { labels: last.labelIds } });
    } catch {
      submitted.push(last);
      flashStatus(gettext("Offline: a saved page can be reopened once the server answers."), true);
      return;
    }
    if (!result.ok) {
      flashStatus(
        interpolate(gettext("The page cannot be reopened: %(error)s"), { error: errorText(result.data, result.status) }, true),
        true,
      );
      return;
    }
    const fresh = new Map(result.data.leases.map((l) => [l.item, l.lease]));
    for (const l of result.data.leases) seenLeases.add(l.lease);
    tiles = last.tiles.filter((t) => fresh.has(t.item)).map((t) => ({ ...t, lease: fresh.get(t.item) }));
    if (result.data.progress) renderProgress(result.data.progress);
    if (!tiles.length) {
      flashStatus(gettext("The page cannot be reopened: its images are no longer free."), true);
      return;
    }
  }
  if (page.length) stashed.push(page.map(({ el, seen, index, ...rest }) => rest));
  showPage(tiles, { reopen: true });
}

function flashStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
}

function reveal() {
  if (prefs.protection === "session") prefs.revealKept = !prefs.revealKept;
  tilesEl.classList.toggle("revealed", prefs.protection === "session" ? prefs.revealKept : !tilesEl.classList.contains("revealed"));
}

const recent = setupRecent({ dialog: $("recent"), url: config.urls.recent, schema });

bindKeys({
  pageKeys: config.keys,
  hotkeys,
  isBlocked(event) {
    if (help.open && event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return help.open || $("recent").open;
  },
  onHotkey(action) {
    const tile = page[focusIndex];
    if (!tile) return false;
    set(tile, { value: action.value, subcategory: action.subcategory });
    return true;
  },
  handlers: {
    submit: submitPage,
    flip() {
      const tile = page[focusIndex];
      if (!tile) return false;
      flip(tile);
      return true;
    },
    undo: reopenLast,
    help: () => toggleDialog(help),
    protection: () => toggleProtection(prefs),
    reveal,
    recent: () => recent.toggle(),
    other(key) {
      const cols = columns();
      const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
      if (key in moves) focusTile(focusIndex + moves[key]);
      else if (key === "Home") focusTile(0);
      else if (key === "End") focusTile(page.length - 1);
      else return false;
      return true;
    },
  },
});

// Toolbar clicks must not move focus to the button (Space would then press it as well as flip).
for (const id of ["submit-page", "open-help", "open-recent", "reopen-page", "reveal-page"]) {
  $(id).addEventListener("mousedown", (e) => e.preventDefault());
}
$("submit-page").addEventListener("click", submitPage);
$("open-help").addEventListener("click", () => toggleDialog(help));
$("open-recent").addEventListener("click", () => recent.toggle());
$("reopen-page").addEventListener("click", reopenLast);
$("reveal-page").addEventListener("click", reveal);

prefetchNextPage();
fetchStats(config.urls.stats);
setInterval(() => fetchStats(config.urls.stats), 30000);

window.imageclean = { outbox, pending: () => outbox.pending, state: () => outbox.state };
