// Exposure limits on the labeling pages (issue 9, item 4): the project's daily cap on
// positive-class images per person and the break reminder after N positives in a row.
//
// The server refuses new claims at the cap (labeling/services/gold.py), with the same message;
// this module stops the page at once, before the images it has already claimed, and shows the
// reminder. config: the page config's "exposure" (where the person stands when the page opened):
// { positive, cap, today, breakAfter, streak, capMessage }.

export class Exposure {
  constructor(config, { onStop }) {
    this.config = config || { cap: 0, breakAfter: 0 };
    this.today = this.config.today || 0;
    this.streak = this.config.streak || 0;
    this.onStop = onStop;
    this.dialog = null;
    if (this.atCap()) queueMicrotask(() => this.onStop(this.config.capMessage));
  }

  atCap() {
    return this.config.cap > 0 && this.today >= this.config.cap;
  }

  // Labels just given, in order (class keys); an undone label is not taken back here: the
  // count errs on the side of the person.
  record(values) {
    for (const value of values) {
      if (value === this.config.positive) {
        this.today += 1;
        this.streak += 1;
      } else {
        this.streak = 0;
      }
    }
    if (this.atCap()) {
      this.onStop(this.config.capMessage);
      return;
    }
    if (this.config.breakAfter > 0 && this.streak >= this.config.breakAfter) {
      this.streak = 0;
      this.remind();
    }
  }

  remind() {
    if (!this.dialog) this.dialog = this.buildDialog();
    if (!this.dialog.open) this.dialog.showModal();
  }

  buildDialog() {
    const dialog = document.createElement("dialog");
    dialog.className = "help break-reminder";
    dialog.id = "break-reminder";
    dialog.setAttribute("aria-labelledby", "break-reminder-title");
    const h = document.createElement("h2");
    h.id = "break-reminder-title";
    h.textContent = gettext("Time for a short break");
    const p = document.createElement("p");
    p.textContent = interpolate(
      ngettext(
        "You have just labeled %(count)s disturbing image in a row. Look away from the screen, stand up, breathe for a few minutes; the queue will wait.",
        "You have just labeled %(count)s disturbing images in a row. Look away from the screen, stand up, breathe for a few minutes; the queue will wait.",
        this.config.breakAfter,
      ),
      { count: this.config.breakAfter },
      true,
    );
    const form = document.createElement("form");
    form.method = "dialog";
    const button = document.createElement("button");
    button.className = "primary";
    button.textContent = gettext("Continue labeling");
    form.append(button);
    dialog.append(h, p, form);
    document.body.append(dialog);
    // While it is open no key reaches the labeling page's handlers; the dialog's own keys
    // (Enter or Space on its button, Esc) still close it.
    window.addEventListener(
      "keydown",
      (event) => {
        if (dialog.open) event.stopPropagation();
      },
      true,
    );
    return dialog;
  }
}
