// flowkit dashboard: confirm dialogs, auto-submitting selects, and live refresh by short poll.
// No framework, no build step. Every value from the server is set with textContent.
(function () {
  "use strict";
  var EVERY_MS = 3000;

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.classList && el.classList.contains("auto-submit") && el.form) {
      el.form.submit();
    }
  });

  function when(iso) {
    if (!iso) { return "-"; }
    return new Date(iso).toISOString().replace("T", " ").slice(0, 19);
  }

  function secs(value) {
    if (value === null || value === undefined) { return "-"; }
    if (value < 1) { return Math.round(value * 1000) + "ms"; }
    if (value < 120) { return value.toFixed(1) + "s"; }
    if (value < 7200) { return (value / 60).toFixed(1) + "m"; }
    return (value / 3600).toFixed(1) + "h";
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function empty(tbody, columns, text) {
    var tr = document.createElement("tr");
    tr.className = "empty";
    var td = cell(tr, text);
    td.colSpan = columns;
    tbody.appendChild(tr);
  }

  function refreshRuns(data) {
    document.querySelectorAll("#counts [data-status]").forEach(function (el) {
      var n = el.querySelector(".n");
      if (n) { n.textContent = String(data.counts[el.dataset.status] || 0); }
    });
    var tbody = document.querySelector("table#runs tbody");
    if (!tbody) { return; }
    tbody.replaceChildren();
    data.runs.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.runId = r.id;
      tr.dataset.status = r.status;
      cell(tr, "").appendChild(link("/runs/" + encodeURIComponent(r.id), r.id));
      cell(tr, r.flow);
      var status = document.createElement("span");
      status.className = "status status-" + r.status;
      status.textContent = r.status;
      cell(tr, "").appendChild(status);
      cell(tr, r.key || "-", "key");
      cell(tr, r.error_type || "");
      cell(tr, when(r.created_at));
      cell(tr, secs(r.duration));
      tbody.appendChild(tr);
    });
    if (!data.runs.length) { empty(tbody, 7, "no runs"); }
  }

  var lastRun = null;
  function refreshRun(data) {
    var signature = data.status + "|" + data.steps.map(function (s) {
      return s.id + ":" + s.status + ":" + s.attempts;
    }).join(",") + "|" + (data.signals_received || []).length;
    if (lastRun === null) { lastRun = signature; return; }
    var typing = document.activeElement && document.activeElement.closest("form");
    if (signature !== lastRun && !typing) { window.location.reload(); }
  }

  function refreshWorkers(data) {
    var tbody = document.querySelector("#workers tbody");
    if (!tbody) { return; }
    tbody.replaceChildren();
    data.workers.forEach(function (w) {
      var tr = document.createElement("tr");
      tr.dataset.workerId = w.id;
      tr.dataset.alive = w.alive ? "true" : "false";
      tr.className = w.alive ? "alive" : "gone";
      var first = cell(tr, w.id);
      if (!w.alive) {
        var mark = document.createElement("span");
        mark.className = "gone-mark";
        mark.textContent = "gone";
        first.append(" ", mark);
      }
      cell(tr, w.host);
      cell(tr, String(w.pid));
      cell(tr, w.queues === null ? "all" : w.queues.join(", "));
      cell(tr, String(w.threads));
      cell(tr, w.version);
      cell(tr, when(w.started_at));
      cell(tr, secs(w.heartbeat_age) + " ago");
      var running = cell(tr, w.running.length ? "" : "-", "running");
      w.running.forEach(function (r, i) {
        var name = r.flow + "." + r.name + (r.item === null ? "" : "[" + r.item + "]");
        var a = link("/runs/" + encodeURIComponent(r.run_id) + "#step-" + r.step_id, name);
        a.dataset.stepId = r.step_id;
        if (i) { running.append(", "); }
        running.appendChild(a);
        if (!w.alive && r.lease_until) {
          var resumes = document.createElement("span");
          resumes.className = "resumes";
          resumes.dataset.leaseUntil = r.lease_until;
          resumes.textContent = "resumed after " + new Date(r.lease_until).toISOString().slice(11, 19) + " (its lease)";
          running.append(" ", resumes);
        }
      });
      tbody.appendChild(tr);
    });
    if (!data.workers.length) { empty(tbody, 9, "no workers seen in the last hour"); }
  }

  var handlers = { runs: refreshRuns, run: refreshRun, workers: refreshWorkers };

  function poll() {
    var url = document.body.dataset.refresh;
    var handler = handlers[document.body.dataset.page];
    if (!url || !handler) { return; }
    var tick = function () {
      if (document.hidden) { return; }
      fetch(url + window.location.search, {
        credentials: "same-origin",
        headers: { Accept: "application/json" }
      }).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(function (data) {
        if (data) { handler(data); }
      }).catch(function () { /* the next tick tries again */ });
    };
    tick();
    window.setInterval(tick, EVERY_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", poll);
  } else {
    poll();
  }
}());
