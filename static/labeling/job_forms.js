// Job forms (labeling/views/job_forms.py): a field whose default depends on another field
// (input size per preset) carries data-default-from="preset" and data-defaults='{"cpu_transfer": "112", ...}'.
// Show the default of the value picked: the placeholder of a number, the blank option of a select.
for (const field of document.querySelectorAll("[data-default-from]")) {
  const source = field.form && field.form.elements.namedItem(field.dataset.defaultFrom);
  if (!source) continue;
  const defaults = JSON.parse(field.dataset.defaults);
  const generic = field.tagName === "SELECT" ? field.options[0].textContent : field.placeholder;
  const show = () => {
    const value = defaults[source.value];
    const text = value === undefined ? generic : `${generic}: ${value}`;
    if (field.tagName === "SELECT") field.options[0].textContent = text;
    else field.placeholder = text;
  };
  source.addEventListener("change", show);
  show();
}
