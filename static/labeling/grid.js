// Grid labeling: a page of thumbnails that all start as the project's common (default) class.
// The annotator flips the few positives and submits the whole page in one request; the next
// page is claimed and its thumbnails downloaded while they work on this one.
//
// Keys: arrows move the focus ring; Enter, Space, a click or the positive class's hotkey flips
// the focused tile; a class hotkey sets that class; a sub-category hotkey sets "positive, with
// this sub-category"; Ctrl+Enter submits the page.

import {
  api, errorText, hotkeyMap, ignoreKey, nameOf, newClientId, NetworkError, Outbox,
  preference, renderSaveState, setPreference, subName,
} from "./outbox.js";

const config = JSON.parse(document.getElementById("labeling-config").textContent);
const schema = config.schema;
const hotkeys = hotkeyMap(schema);
const PAGE_SIZE = config.pageSize;
const DEFAULT = schema.default || schema.classes[0].key;
const POSITIVE = schema.positive;
// What a positive tile flips to: the common class (a confirm queue pre-selects the positive).
const COMMON = schema.common || DEFAULT;

const $ = (id) => document.getElementById(id);
const tilesEl = $("tiles");
const statusEl = $("grid-status");
const saveState = $("save-state");
const help = $("help");

let page = []; // tiles on screen
let nextPage = null; // lease payloads claimed for the next page (thumbnails prefetched)
let focusIndex = 0;
let fetching = false;
let shownAt = performance.now();
const seenLeases = new Set();

const outbox = new Outbox({
  storageKey: `imageclean:outbox:${config.userId}:${config.queueId}:grid`,
  resolve(entry) {
    return { url: config.urls.batch, body: entry.body };
  },
  onDone(entry, data) {
    if (data && data.progress) renderProgress(data.progress);
    loadStats();
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

async function claim(count) {
  const { ok, status, data } = await api(config.urls.next, { body: { count: Math.min(50, count) } });
  if (!ok) throw new Error(errorText(data, status));
  renderProgress(data.progress, { recent: true });
  const fresh = data.leases.filter((l) => !seenLeases.has(l.lease));
  for (const l of fresh) seenLeases.add(l.lease);
  return fresh;
}

function pendingLeaseCount() {
  let n = page.length;
  for (const entry of outbox.entries) n += entry.body.entries.length;
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
  if (fetching || nextPage) return;
  fetching = true;
  try {
    const fresh = await claim(pendingLeaseCount() + PAGE_SIZE);
    nextPage = prefetchThumbs(fresh.slice(0, PAGE_SIZE));
  } catch (err) {
    if (err instanceof NetworkError) setTimeout(prefetchNextPage, 3000);
    else flashStatus(String(err.message || err), true);
  } finally {
    fetching = false;
  }
  if (!page.length) showNextPage();
}

function showNextPage() {
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
  page = leases.map((l, index) => ({ ...l, index, value: DEFAULT, subcategory: "" }));
  renderPage();
  shownAt = performance.now();
  // The next page is claimed now only if nothing is waiting to be saved; otherwise right after
  // the save (see onDone), when the server no longer counts the saved leases as ours.
  if (!outbox.pending) prefetchNextPage();
}

function tileLabel(tile) {
  const cls = nameOf(schema, tile.value);
  return tile.subcategory ? `${cls} · ${subName(schema, tile.subcategory)}` : cls;
}

function renderPage() {
  tilesEl.replaceChildren();
  $("submit-page").disabled = false;
  for (const tile of page) {
    const el = document.createElement("div");
    el.className = "tile";
    el.setAttribute("role", "checkbox");
    el.tabIndex = -1;
    el.dataset.image = String(tile.image.id);
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
  focusTile(0);
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
  const div = document.createElement("div");
  div.className = "placeholder";
  div.setAttribute("role", "status");
  const h = document.createElement("h2");
  h.textContent = title;
  const p = document.createElement("p");
  p.textContent = text;
  div.append(h, p);
  tilesEl.replaceChildren(div);
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
  const duration = Math.round((performance.now() - shownAt) / page.length);
  const entries = page.map((t) => ({
    lease: t.lease,
    value: t.value,
    subcategory: t.subcategory,
    duration_ms: duration,
    client_id: newClientId(),
  }));
  outbox.push({ type: "batch", body: { entries } });
  const flipped = entries.filter((e) => e.value !== DEFAULT).length;
  flashStatus(
    interpolate(
      gettext("Page sent: %(count)s labels, %(flipped)s changed."),
      { count: entries.length, flipped },
      true,
    ),
  );
  page = [];
  showNextPage();
}

function flashStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
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

async function loadStats() {
  try {
    const { ok, data } = await api(config.urls.stats, { method: "GET" });
    if (ok) {
      $("rate").textContent = data.stats.per_minute.toFixed(1);
      $("own-total").textContent = data.stats.total;
      renderProgress(data.progress);
    }
  } catch {
    // Informative only.
  }
}

function setBlur(on) {
  document.body.classList.toggle("blur-on", on);
  $("toggle-blur").setAttribute("aria-pressed", String(on));
  setPreference(`blur:${config.projectSlug}`, on);
}

function toggleHelp() {
  if (help.open) help.close();
  else help.showModal();
}

document.addEventListener("keydown", (event) => {
  if (ignoreKey(event)) return;
  if (help.open) {
    if (event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return;
  }
  if (event.ctrlKey && event.key === "Enter") {
    event.preventDefault();
    if (!event.repeat) submitPage();
    return;
  }
  if (event.ctrlKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const cols = columns();
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
  if (key in moves) {
    event.preventDefault();
    focusTile(focusIndex + moves[key]);
    return;
  }
  if (key === "Home" || key === "End") {
    event.preventDefault();
    focusTile(key === "Home" ? 0 : page.length - 1);
    return;
  }
  const tile = page[focusIndex];
  if (event.repeat && (key === "Enter" || key === " " || hotkeys.has(key))) {
    event.preventDefault(); // a held key never flips a tile back and forth
    return;
  }
  if ((key === "Enter" || key === " ") && tile) {
    event.preventDefault();
    flip(tile);
  } else if (hotkeys.has(key) && tile) {
    event.preventDefault();
    const action = hotkeys.get(key);
    set(tile, { value: action.value, subcategory: action.subcategory });
  } else if (key === "?") {
    event.preventDefault();
    toggleHelp();
  } else if (key === "b" && !hotkeys.has("b")) {
    event.preventDefault();
    setBlur(!document.body.classList.contains("blur-on"));
  }
});

$("submit-page").addEventListener("click", submitPage);
$("toggle-blur").addEventListener("click", () => setBlur(!document.body.classList.contains("blur-on")));
$("open-help").addEventListener("click", toggleHelp);

setBlur(preference(`blur:${config.projectSlug}`, config.blurDefault));
prefetchNextPage();
loadStats();
setInterval(loadStats, 30000);

window.imageclean = { outbox, pending: () => outbox.pending, state: () => outbox.state };
