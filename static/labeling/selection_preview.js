// The select form's preview (issue 12): what a round would take with the values in the form,
// asked of GET /api/v1/projects/<slug>/select/preview/ whenever a field changes, so the
// engineer sees the size before starting it. The server words the answer (in the reader's
// language); a refused value shows the server's message.
const box = document.getElementById("selection-preview");
const form = document.getElementById("start-select");
if (box && form) {
  let asked = 0;
  const refresh = async () => {
    const query = new URLSearchParams();
    for (const field of form.elements) {
      if (!field.name || field.name === "kind" || field.name === "csrfmiddlewaretoken") continue;
      if (field.type === "checkbox") query.set(field.name, field.checked ? "on" : "off");
      else if (field.value !== "") query.set(field.name, field.value);
    }
    const mine = ++asked;
    try {
      const response = await fetch(`${box.dataset.url}?${query}`, { credentials: "same-origin" });
      const body = await response.json();
      if (mine !== asked) return; // a later change answered first
      if (response.ok) {
        box.textContent = `${body.summary} ${body.rule} ${body.counted}`;
      } else {
        box.textContent = Object.values(body).flat().join(" ");
      }
      box.dataset.state = response.ok ? "ok" : "refused";
    } catch (error) {
      box.dataset.state = "offline";
    }
  };
  form.addEventListener("change", refresh);
}
