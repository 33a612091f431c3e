// The job page: poll the job's JSON (/api/v1/jobs/<id>/) and show status, stage, percent bar,
// shards and log tail without reloading; the cancel button posts to the cancel endpoint.

const root = document.getElementById("job");
const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
// The same words as Job.Status's labels (labeling/models.py), in the page's language.
const STATUS_NAMES = {
  queued: pgettext("job status", "Queued"),
  running: pgettext("job status", "Running"),
  succeeded: pgettext("job status", "Succeeded"),
  failed: pgettext("job status", "Failed"),
  cancelled: pgettext("job status", "Cancelled"),
};

function render(job) {
  const status = $("job-status");
  status.textContent = STATUS_NAMES[job.status] || job.status;
  status.className = `tag job-status job-${job.status}`;
  $("job-stage").textContent = job.stage || "—";
  const percent = Math.round(job.percent);
  $("job-percent").textContent = `${percent}%`;
  const bar = $("job-bar");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.firstElementChild.style.width = `${percent}%`;
  $("job-shards").textContent = job.shards.total ? `${job.shards.done} / ${job.shards.total}` : "—";
  $("job-log").textContent = job.log_tail.join("\n");
  $("job-result").textContent = JSON.stringify(job.result, null, 2);
  // A job that found nothing to do says why (result.notice), in plain words above the result.
  const notice = $("job-notice");
  notice.textContent = (job.result && job.result.notice) || "";
  notice.hidden = !notice.textContent;
  const error = $("job-error");
  error.hidden = !job.error;
  error.textContent = job.error;
  const cancel = $("job-cancel-form");
  if (cancel) cancel.hidden = job.is_finished;
  if (job.cancel_requested && !job.is_finished) $("job-message").textContent = gettext("Cancel requested…");
}

async function poll() {
  try {
    const response = await fetch(root.dataset.apiUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(interpolate(gettext("HTTP error %(status)s"), { status: response.status }, true));
    const job = await response.json();
    render(job);
    if (!job.is_finished) setTimeout(poll, POLL_MS);
    else if (root.dataset.finished !== "true") window.location.reload();
  } catch (error) {
    $("job-message").textContent = interpolate(
      gettext("Could not refresh (%(error)s); retrying…"),
      { error: error.message },
      true,
    );
    setTimeout(poll, POLL_MS * 3);
  }
}

poll();
