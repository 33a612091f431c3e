// The page scripts' one API client: JSON in and out, the CSRF token, idempotency ids, and one
// readable line out of a DRF error body. Text the person reads goes through gettext() /
// interpolate(), globals defined by Django's JavaScript catalog (/jsi18n/, loaded by base.html
// before the page's modules run).

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class NetworkError extends Error {}

// POST (or GET, PATCH) JSON; resolves to {ok, status, data}; rejects with NetworkError when the
// server could not be reached at all.
// `keepalive`: the request outlives the page (a preference changed just before leaving).
export async function api(url, { method = "POST", body, keepalive = false } = {}) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      keepalive,
      headers: {
        Accept: "application/json",
        ...(method === "GET" ? {} : { "Content-Type": "application/json", "X-CSRFToken": csrfToken() }),
      },
      body: method === "GET" ? undefined : JSON.stringify(body ?? {}),
    });
  } catch (err) {
    throw new NetworkError(String(err));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

// A random id for idempotency. crypto.randomUUID exists only in secure contexts (https or
// localhost), getRandomValues everywhere.
export function newClientId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Turn a DRF error body into one readable line.
export function errorText(data, status) {
  if (!data) return interpolate(gettext("HTTP error %(status)s"), { status }, true);
  if (typeof data === "string") return data;
  if (data.detail) return Array.isArray(data.detail) ? data.detail.join(" ") : String(data.detail);
  return Object.entries(data)
    .map(([field, msgs]) => `${field}: ${Array.isArray(msgs) ? msgs.flat().map((m) => (typeof m === "object" ? JSON.stringify(m) : m)).join(" ") : JSON.stringify(msgs)}`)
    .join("; ");
}
