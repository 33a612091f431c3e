// The quality page's agreement section, loaded after the page (issue 11, item 3): it reads
// every vote on the images of the latest annotations, which at a million images cost more than
// the rest of the page together, so the page answers first and the section follows from
// GET <data-url> (the same section rendered by the server, in the reader's language). Without
// JavaScript, the placeholder's link opens the section on its own.
const placeholder = document.getElementById("agreement");
if (placeholder && placeholder.dataset.url) {
  const load = async () => {
    try {
      const response = await fetch(placeholder.dataset.url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      placeholder.outerHTML = await response.text();
    } catch (error) {
      placeholder.setAttribute("aria-busy", "false");
      placeholder.querySelector(".loading")?.setAttribute("hidden", "");
      placeholder.querySelector(".load-failed")?.removeAttribute("hidden");
    }
  };
  load();
}
