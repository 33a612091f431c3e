// The labeling pages' toolbar counters and placeholders: the queue's progress, the person's own
// throughput, and the message shown where there is nothing to label.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

// The claim's counts may be up to 2 s old (the server reuses them: NEXT_PROGRESS_MAX_AGE_S);
// they never replace fresher ones from a save or the stats, or the counter would step back.
let freshProgressAt = -Infinity;
export function renderProgress(progress, { recent = false } = {}) {
  if (!progress) return;
  if (recent && performance.now() - freshProgressAt < 3000) return;
  if (!recent) freshProgressAt = performance.now();
  $("progress-done").textContent = progress.done;
  $("progress-total").textContent = progress.total;
}

export async function loadStats(url) {
  try {
    const { ok, data } = await api(url, { method: "GET" });
    if (ok) {
      $("rate").textContent = data.stats.per_minute.toFixed(1);
      $("own-total").textContent = data.stats.total;
      renderProgress(data.progress);
    }
  } catch {
    // Throughput is informative only; the next poll tries again.
  }
}

export function placeholder(title, text) {
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

export function toggleDialog(dialog) {
  if (dialog.open) dialog.close();
  else dialog.showModal();
}
