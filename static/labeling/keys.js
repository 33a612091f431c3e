// The keyboard, shared by the single, grid and review pages. Two sources, never hard-coded here:
// - the project's label schema: one hotkey per class or sub-category (a sub-category key means
//   "positive, with this sub-category" in one press);
// - the page's own actions (skip, undo, reveal...), declared once on the server
//   (labeling/keys.py) and sent in the page config; the schema validator refuses a class hotkey
//   that any page reserves, so the two never collide.

export function nameOf(schema, key) {
  const cls = (schema.classes || []).find((c) => c.key === key);
  return cls ? cls.name || cls.key : key;
}

export function subName(schema, key) {
  const sub = (schema.subcategories || []).find((c) => c.key === key);
  return sub ? sub.name || sub.key : key;
}

export function hotkeyMap(schema) {
  const map = new Map();
  for (const cls of schema.classes || []) {
    if (cls.hotkey) map.set(cls.hotkey.toLowerCase(), { value: cls.key, subcategory: "", name: cls.name || cls.key });
  }
  for (const sub of schema.subcategories || []) {
    if (sub.hotkey) {
      map.set(sub.hotkey.toLowerCase(), {
        value: schema.positive,
        subcategory: sub.key,
        name: `${nameOf(schema, schema.positive)} · ${sub.name || sub.key}`,
      });
    }
  }
  return map;
}

// {action: [keys]} from the page config -> Map key -> action.
export function actionMap(pageKeys) {
  const map = new Map();
  for (const [action, keys] of Object.entries(pageKeys || {})) for (const key of keys) map.set(key, action);
  return map;
}

// The event's key as the maps above spell it: one character lower-cased, names as they are.
export function keyOf(event) {
  return event.key.length === 1 ? event.key.toLowerCase() : event.key;
}

// True when a key event should be left to the browser (typing in a field, a shortcut with a
// modifier).
export function ignoreKey(event) {
  const t = event.target;
  if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return true;
  if (event.altKey || event.metaKey) return true;
  return false;
}

// One keydown listener for a page: `handlers[action]()` for the page's own keys, `onHotkey`
// for the schema's; a class hotkey wins over a page key (older schemas saved before the
// validator knew a page's keys keep working). A held key auto-repeating never acts, and a
// handler that returns false leaves the key to the browser.
export function bindKeys({ pageKeys, hotkeys, handlers, onHotkey, isBlocked }) {
  const actions = actionMap(pageKeys);
  document.addEventListener("keydown", (event) => {
    if (ignoreKey(event)) return;
    if (isBlocked && isBlocked(event)) return;
    if (event.ctrlKey) {
      if (event.key === "Enter" && handlers.submit) {
        event.preventDefault();
        if (!event.repeat) handlers.submit();
      }
      return;
    }
    const key = keyOf(event);
    const action = hotkeys && hotkeys.has(key) ? null : actions.get(key);
    if (!action && !(hotkeys && hotkeys.has(key))) {
      if (handlers.other && handlers.other(key, event) !== false) event.preventDefault();
      return;
    }
    if (event.repeat) {
      event.preventDefault();
      return;
    }
    const done = action ? handlers[action]?.(event) : onHotkey(hotkeys.get(key), event);
    if (done !== false) event.preventDefault();
  });
}
