// "My recent labels": the person's own latest answers in this queue (GET
// /api/v1/queues/<id>/my-labels/), newest first, each with what became of it. On the
// single-image page a current one can be changed: the page takes it back (undo of that label)
// and shows the image again with the answer that was given highlighted.

import { api, errorText } from "./api.js";
import { nameOf, subName } from "./keys.js";

function answerName(schema, row) {
  const cls = nameOf(schema, row.value);
  return row.subcategory ? `${cls} · ${subName(schema, row.subcategory)}` : cls;
}

const STATES = () => ({
  current: gettext("Current"),
  undone: gettext("Undone"),
  reviewed: gettext("Reviewed by a lead"),
});

export function setupRecent({ dialog, url, schema, onChange }) {
  const list = dialog.querySelector("[data-recent-list]");
  const status = dialog.querySelector("[data-recent-status]");

  async function load() {
    status.textContent = gettext("Loading…");
    list.replaceChildren();
    let result;
    try {
      result = await api(`${url}?limit=30`, { method: "GET" });
    } catch {
      status.textContent = gettext("Offline: the list needs the server.");
      return;
    }
    if (!result.ok) {
      status.textContent = errorText(result.data, result.status);
      return;
    }
    const rows = result.data.labels;
    status.textContent = rows.length ? "" : gettext("You have not labeled anything in this queue yet.");
    const states = STATES();
    for (const row of rows) {
      const li = document.createElement("li");
      li.dataset.label = String(row.id);
      li.dataset.image = String(row.image);
      li.dataset.state = row.state;
      const img = new Image();
      img.src = row.thumb_url;
      img.alt = "";
      const answer = document.createElement("b");
      answer.textContent = answerName(schema, row);
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = `${new Date(row.created_at).toLocaleTimeString()} · ${states[row.state] || row.state}`;
      li.append(img, answer, when);
      if (onChange && row.state === "current") {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = gettext("Change");
        button.addEventListener("click", () => {
          dialog.close();
          onChange(row);
        });
        li.append(button);
      }
      list.append(li);
    }
  }

  return {
    toggle() {
      if (dialog.open) {
        dialog.close();
        return;
      }
      dialog.showModal();
      load();
    },
  };
}
