// Scheduler0 dashboard: reads this node's API with a client credential and
// draws the cluster, the jobs, their executions and an hour of activity.
// Plain ES2020, no framework; API text only ever reaches the page through
// textContent and attributes, never as HTML.
"use strict";

(() => {
  const API = "/api/v1";
  const REFRESH_MS = 3000;
  const RECENT_LIMIT = 1000;
  const TIMELINE_SLOTS = 60;
  const STRIP_SLOTS = 24;
  const STATES = ["succeeded", "failed", "running", "scheduled", "skipped"];
  // What the per-minute summary counts: executions that reached a final state.
  const OUTCOMES = ["succeeded", "failed", "skipped"];
  const STORE_KEY = "scheduler0.dashboard.credential";

  const $ = (selector) => document.querySelector(selector);

  const view = {
    generation: 0,
    timer: null,
    pinned: null, // execution_id whose details stay shown on the job view
    hovered: null, // execution_id under the mouse, kept across re-renders
    chart: null, // the last chart data, to redraw on resize
    executions: new Map(), // execution_id -> execution on the job view
  };

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data === undefined ? null : data;
    }
  }

  // -- building the page safely ----------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function stateBadge(state) {
    if (!state) return el("span", { class: "muted", text: "—" });
    return el("span", { class: `badge state-${STATES.includes(state) ? state : "scheduled"}`, text: state });
  }

  function legend(container, withLateness, states = STATES) {
    const items = states.map((state) =>
      el("span", {}, el("i", { class: `swatch state-${state}` }), state),
    );
    if (withLateness) items.push(el("span", {}, el("i", { class: "swatch line late" }), "avg lateness"));
    container.replaceChildren(...items);
  }

  // -- time ---------------------------------------------------------------

  function parseTime(text) {
    if (!text) return null;
    const value = Date.parse(text);
    return Number.isNaN(value) ? null : value;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function absolute(text) {
    const ms = parseTime(text);
    if (ms === null) return "—";
    const date = new Date(ms);
    const today = new Date().toDateString() === date.toDateString();
    return today ? clock(ms) : `${date.toLocaleDateString()} ${clock(ms)}`;
  }

  function span(seconds) {
    const s = Math.abs(seconds);
    if (s < 0.01) return `${Math.round(s * 10000) / 10} ms`;
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function relative(text) {
    const ms = parseTime(text);
    if (ms === null) return "—";
    const seconds = (ms - Date.now()) / 1000;
    if (Math.abs(seconds) < 0.5) return "now";
    return seconds > 0 ? `in ${span(seconds)}` : `${span(seconds)} ago`;
  }

  function timeCell(text, extraClass) {
    return el("td", { class: extraClass, title: text || undefined, text: relative(text) });
  }

  function lateness(execution) {
    const started = parseTime(execution.started_at);
    const scheduled = parseTime(execution.scheduled_at);
    return started === null || scheduled === null ? null : started - scheduled;
  }

  function latenessText(ms) {
    return ms === null ? "—" : span(ms / 1000);
  }

  // -- the API ----------------------------------------------------------------

  function credential() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      return stored && stored.key && stored.secret ? stored : null;
    } catch (error) {
      return null;
    }
  }

  async function api(method, path, body) {
    const stored = credential();
    if (!stored) throw new ApiError(401, "signed out");
    const headers = { accept: "application/json", "x-api-key": stored.key, "x-secret-key": stored.secret };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      throw new ApiError(0, `the node did not answer (${error.message})`);
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    if (!response.ok || !payload || payload.success === false) {
      const message = (payload && payload.error && payload.error.message) || `HTTP ${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, payload && payload.data);
    }
    return payload.data;
  }

  // GET /healthcheck answers 503 with the same data while the node is not
  // ready (no leader, no quorum, no lease, paused): that is still its health.
  async function healthCheck() {
    try {
      return await api("GET", "/healthcheck");
    } catch (error) {
      if (error.status === 503 && error.data && typeof error.data === "object") return error.data;
      throw error;
    }
  }

  // The members as each answers for itself, from this node's copy, so the
  // cluster still shows while it has no quorum.
  const clusterView = () => api("GET", "/cluster?consistency=stale");

  const query = (params) =>
    Object.entries(params)
      .filter(([, value]) => value !== undefined && value !== null)
      .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`)
      .join("&");

  async function recentExecutions() {
    // The newest executions, for each job's strip of recent slots.
    return api("GET", `/executions?${query({ limit: RECENT_LIMIT })}`);
  }

  // -- signing in and out -------------------------------------------------------

  function showSignIn(message) {
    show($("#app"), false);
    show($("#sign-out"), false);
    show($("#node-badge"), false);
    show($("#refreshed"), false);
    show($("#signin"), true);
    const error = $("#signin-error");
    error.textContent = message || "";
    show(error, Boolean(message));
    $("#api-key").focus();
  }

  function showApp() {
    show($("#signin"), false);
    show($("#app"), true);
    show($("#sign-out"), true);
  }

  function signOut(message) {
    sessionStorage.removeItem(STORE_KEY);
    view.generation += 1;
    clearTimeout(view.timer);
    hideTooltip();
    showSignIn(message);
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    const secret = $("#api-secret").value;
    if (!key || !secret) {
      showSignIn("Enter both the API key and the API secret.");
      return;
    }
    const button = $("#signin-submit");
    button.disabled = true;
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ key, secret }));
    try {
      await clusterView();
      $("#api-secret").value = "";
      showApp();
      route();
    } catch (error) {
      sessionStorage.removeItem(STORE_KEY);
      showSignIn(error.message);
    } finally {
      button.disabled = false;
    }
  }

  // -- refreshing -----------------------------------------------------------

  function currentRoute() {
    const match = location.hash.match(/^#\/job\/([^/?#]+)$/);
    return match ? { name: "job", uuid: decodeURIComponent(match[1]) } : { name: "overview" };
  }

  function route() {
    view.hovered = null;
    if (!credential()) {
      showSignIn();
      return;
    }
    const current = currentRoute();
    show($("#view-overview"), current.name === "overview");
    show($("#view-job"), current.name === "job");
    hideTooltip();
    refresh();
  }

  function scheduleRefresh() {
    clearTimeout(view.timer);
    view.timer = setTimeout(() => {
      // While the tab is hidden nothing is fetched; becoming visible refreshes.
      if (document.visibilityState === "visible") refresh();
    }, REFRESH_MS);
  }

  async function refresh() {
    if (!credential()) return;
    clearTimeout(view.timer);
    view.generation += 1;
    const generation = view.generation;
    const current = () => generation === view.generation;
    try {
      const health = await healthCheck();
      if (!current()) return;
      renderNodeBadge(health);
      const where = currentRoute();
      if (where.name === "job") await refreshJob(where.uuid, current);
      else await refreshOverview(health, current);
      if (!current()) return;
      show($("#banner"), false);
      $("#refreshed-text").textContent = `Updated ${clock(Date.now())}`;
      show($("#refreshed"), true);
    } catch (error) {
      if (!current()) return;
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      const banner = $("#banner");
      banner.textContent = `Could not refresh: ${error.message}`;
      show(banner, true);
    } finally {
      if (current() && credential()) scheduleRefresh();
    }
  }

  function renderNodeBadge(health) {
    const badge = $("#node-badge");
    const parts = [`node ${health.node_id}`, health.role];
    if (health.version) parts.push(`v${health.version}`);
    badge.textContent = parts.join(" · ");
    show(badge, true);
  }

  // -- overview -------------------------------------------------------------

  async function refreshOverview(health, current) {
    const rest = Promise.all([
      api("GET", `/projects?${query({ limit: 100 })}`),
      recentExecutions(),
      api("GET", `/executions/summary?${query({ minutes: 60 })}`),
    ]);
    rest.catch(() => {}); // awaited below, once the cluster is drawn
    // The cluster first: without a quorum the rest cannot be read, and the
    // cluster card is what shows why.
    const cluster = await clusterView();
    if (!current()) return;
    renderCluster(health, cluster);
    const [projects, recent, summary] = await rest;
    const jobPages = await Promise.all(
      projects.items.map((project) => api("GET", `/jobs?${query({ project_uuid: project.uuid, limit: 200 })}`)),
    );
    if (!current()) return;
    renderChart(summary);
    renderProjects(projects, jobPages, recent.items);
  }

  function stat(label, value, sub, id) {
    return el("div", {}, el("dt", { text: label }), el("dd", { id, title: sub ? `${value} ${sub}` : String(value) }, String(value), sub ? el("span", { class: "sub", text: sub }) : null));
  }

  function renderCluster(health, cluster) {
    const leaderId = cluster.leader_id ?? health.leader_id;
    const leader = (cluster.members || []).find((member) => member.node_id === leaderId);
    const leaderAddress = health.leader_address || (leader && leader.address) || "";
    $("#cluster-stats").replaceChildren(
      stat("Leader", leaderId === null || leaderId === undefined ? "none" : `node ${leaderId}`, leaderAddress, "cluster-leader"),
      stat("This node", `node ${health.node_id}`, health.role, "cluster-self"),
      stat("Term", health.term ?? cluster.term, null, "cluster-term"),
      stat("Commit index", health.commit_index ?? "—", null, "cluster-commit"),
      stat("Applied index", health.applied_index ?? "—", null, "cluster-applied"),
      stat("Members", (cluster.members || []).length, null, "cluster-size"),
    );
    const scheduling = $("#scheduling");
    if (health.scheduling_paused) {
      scheduling.className = "badge warn";
      scheduling.textContent = `Scheduling paused${health.pause_reason ? `: ${health.pause_reason}` : ""}`;
    } else if (health.lease_valid === false) {
      scheduling.className = "badge warn";
      scheduling.textContent = "Scheduling stopped: no lease";
    } else {
      scheduling.className = "badge ok";
      scheduling.textContent = "Scheduling active";
    }
    renderReadiness(health);
    const contact = new Map((health.members || []).map((member) => [member.node_id, member.last_contact]));
    const rows = (cluster.members || []).map((member) => {
      const lastContact = contact.get(member.node_id);
      const reachable = member.reachable === undefined ? null : member.reachable;
      const role = member.role + (member.voter === false ? " (non-voter)" : "");
      const roleClass = member.role === "unreachable" ? "warn" : member.node_id === leaderId ? "ok" : "";
      return el(
        "tr",
        { dataset: { nodeId: String(member.node_id) } },
        el("td", { text: `node ${member.node_id}${member.node_id === health.node_id ? " (this)" : ""}` }),
        el("td", { class: "mono wrap address", text: member.address, title: member.address }),
        el("td", {}, el("span", { class: `badge role ${roleClass}`, text: role })),
        el("td", {}, reachable === null ? "—" : el("span", { class: `badge ${reachable ? "ok" : "bad"}`, text: reachable ? "yes" : "no" })),
        el("td", { class: "num", text: member.node_id === health.node_id || lastContact === null || lastContact === undefined ? "—" : `${span(lastContact)} ago` }),
        el("td", { class: "num", text: member.owned_jobs ?? "—" }),
      );
    });
    $("#members tbody").replaceChildren(...rows);
  }

  // Whether this node is ready (GET /healthcheck 200) and, if not, why.
  function renderReadiness(health) {
    const reasons = Array.isArray(health.reasons) ? health.reasons : [];
    const ready = health.ready !== false;
    const badge = $("#readiness");
    badge.className = `badge ${ready ? "ok" : "bad"}`;
    badge.textContent = ready ? "Ready" : "Not ready";
    badge.title = ready
      ? "This node can serve writes and fire its jobs"
      : reasons.map((reason) => reason.message).join("\n");
    const list = $("#not-ready");
    list.replaceChildren(
      ...reasons.map((reason) => el("li", { dataset: { code: reason.code } }, el("code", { text: reason.code }), ` ${reason.message}`)),
    );
    show(list, !ready && reasons.length > 0);
  }

  function jobActions(job) {
    const toggle = el("button", {
      class: "button small",
      type: "button",
      text: job.paused ? "Resume" : "Pause",
      dataset: { action: job.paused ? "resume" : "pause", jobUuid: job.uuid },
      onclick: () => setPaused(job.uuid, !job.paused, toggle),
    });
    const run = el("button", {
      class: "button small",
      type: "button",
      text: "Run now",
      dataset: { action: "run", jobUuid: job.uuid },
      onclick: () => runNow(job.uuid, run),
    });
    return el("div", { class: "actions" }, toggle, run);
  }

  function strip(executions) {
    const slots = executions.slice(0, STRIP_SLOTS).reverse();
    return el(
      "div",
      { class: "strip", title: `last ${slots.length} executions in the hour` },
      slots.map((execution) => el("i", { class: `slot state-${execution.state}`, title: `${execution.scheduled_at} ${execution.state}` })),
    );
  }

  function renderProjects(projects, jobPages, recent) {
    const byJob = new Map();
    for (const execution of recent) {
      if (!byJob.has(execution.job_uuid)) byJob.set(execution.job_uuid, []);
      byJob.get(execution.job_uuid).push(execution);
    }
    for (const list of byJob.values()) list.sort((a, b) => (a.scheduled_at < b.scheduled_at ? 1 : -1));
    const jobCount = jobPages.reduce((sum, page) => sum + page.total, 0);
    $("#projects-count").textContent = `${projects.total} project${projects.total === 1 ? "" : "s"}, ${jobCount} job${jobCount === 1 ? "" : "s"}`;
    const list = $("#project-list");
    if (!projects.items.length) {
      list.replaceChildren(el("p", { class: "empty", text: "No projects yet: create one with POST /api/v1/projects." }));
      return;
    }
    const sections = projects.items.map((project, index) => {
      const page = jobPages[index];
      const head = el(
        "div",
        { class: "project-head" },
        el("h3", { text: project.name }),
        project.description ? el("span", { class: "muted", text: project.description }) : null,
        project.notify_url ? el("span", { class: "muted small mono project-notify", title: "Failure notices go here", text: `notices → ${project.notify_url}` }) : null,
        el("span", { class: "muted small", text: `${page.total} job${page.total === 1 ? "" : "s"}${page.total > page.items.length ? `, first ${page.items.length} shown` : ""}` }),
      );
      if (!page.items.length) {
        return el("div", { class: "project" }, head, el("p", { class: "empty", text: "No jobs in this project." }));
      }
      const rows = page.items.map((job) =>
        el(
          "tr",
          { class: "job-row", dataset: { jobUuid: job.uuid } },
          el("td", {}, el("a", { class: "job-name", href: `#/job/${encodeURIComponent(job.uuid)}`, text: job.name }), el("span", { class: "job-id mono", text: job.uuid })),
          el("td", {}, el("code", { text: job.spec }), job.timezone && job.timezone !== "UTC" ? el("span", { class: "job-id", text: job.timezone }) : null),
          el("td", { class: "col-state" }, el("span", { class: `badge ${job.paused ? "warn" : "ok"}`, text: job.paused ? "paused" : "active" })),
          job.paused ? el("td", { class: "col-next muted", text: "paused" }) : timeCell(job.next_run_at, "col-next"),
          timeCell(job.last_run_at, "col-last-run"),
          el("td", { class: "col-last-status" }, stateBadge(job.last_status)),
          el("td", { class: "col-recent" }, strip(byJob.get(job.uuid) || [])),
          el("td", {}, jobActions(job)),
        ),
      );
      const table = el(
        "table",
        { class: "table jobs" },
        el("thead", {}, el("tr", {}, ["Job", "Schedule", "State", "Next run", "Last run", "Last status", "Recent", ""].map((title) => el("th", { text: title })))),
        el("tbody", {}, rows),
      );
      return el("div", { class: "project", dataset: { projectUuid: project.uuid } }, head, table);
    });
    list.replaceChildren(...sections);
  }

  // -- the chart ---------------------------------------------------------------

  function renderChart(summary) {
    // Every node counts the executions it fires, per minute, as they end;
    // the answering node sums them (pruned history does not thin them).
    const buckets = summary.buckets.map((bucket) => ({
      at: parseTime(bucket.at),
      counts: Object.fromEntries(STATES.map((state) => [state, OUTCOMES.includes(state) ? bucket[state] || 0 : 0])),
      lateSum: 1000 * (bucket.lateness_sum_s || 0),
      lateCount: bucket.started || 0,
    }));
    const totals = Object.fromEntries(STATES.map((state) => [state, OUTCOMES.includes(state) ? summary.totals[state] || 0 : 0]));
    view.chart = { buckets, totals };
    drawChart();
    const canvas = $("#chart");
    const count = OUTCOMES.reduce((sum, state) => sum + totals[state], 0);
    canvas.dataset.executions = String(count);
    for (const state of STATES) canvas.dataset[state] = String(totals[state]);
    const parts = [`${count.toLocaleString()} execution${count === 1 ? "" : "s"} ended in the last hour`];
    if (totals.failed) parts.push(`${totals.failed.toLocaleString()} failed`);
    if (totals.skipped) parts.push(`${totals.skipped.toLocaleString()} skipped`);
    const late = summary.lateness;
    const started = late.counts.reduce((sum, n) => sum + n, 0);
    if (started) {
      // Percentiles to the histogram's bucket: "at most" its upper bound.
      const bound = (q) => {
        let seen = 0;
        for (let index = 0; index < late.counts.length; index += 1) {
          seen += late.counts[index];
          if (seen >= q * started) {
            return index < late.bounds_s.length ? `≤ ${latenessText(1000 * late.bounds_s[index])}` : `> ${latenessText(1000 * late.bounds_s[late.bounds_s.length - 1])}`;
          }
        }
        return "—";
      };
      const max = Math.max(...summary.buckets.map((bucket) => bucket.lateness_max_s || 0));
      parts.push(`lateness p50 ${bound(0.5)}, p99 ${bound(0.99)}, max ${latenessText(1000 * max)}`);
    }
    if (summary.missing_nodes && summary.missing_nodes.length) {
      parts.push(`not counted: node${summary.missing_nodes.length === 1 ? "" : "s"} ${summary.missing_nodes.join(", ")} did not answer`);
    }
    $("#chart-summary").textContent = parts.join(" · ");
  }

  function niceCeiling(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart() {
    const canvas = $("#chart");
    const data = view.chart;
    if (!data || canvas.offsetParent === null) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(`--${name}`).trim() || "#888";
    const pad = { left: 40, right: 54, top: 10, bottom: 24 };
    const plotW = Math.max(10, width - pad.left - pad.right);
    const plotH = Math.max(10, height - pad.top - pad.bottom);
    const { buckets } = data;
    const countMax = niceCeiling(Math.max(...buckets.map((b) => STATES.reduce((sum, s) => sum + b.counts[s], 0))));
    const averages = buckets.map((b) => (b.lateCount ? b.lateSum / b.lateCount : null));
    const lateMax = niceCeiling(Math.max(10, ...averages.filter((v) => v !== null)));
    const baseY = pad.top + plotH;

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    for (let tick = 0; tick <= 4; tick += 1) {
      const y = Math.round(baseY - (tick / 4) * plotH) + 0.5;
      ctx.strokeStyle = color("grid");
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(pad.left + plotW, y);
      ctx.stroke();
      ctx.fillStyle = color("muted");
      ctx.textAlign = "right";
      ctx.fillText(String(Math.round((countMax * tick) / 4 * 10) / 10), pad.left - 6, y);
      ctx.fillStyle = color("late");
      ctx.textAlign = "left";
      ctx.fillText(latenessText((lateMax * tick) / 4), pad.left + plotW + 6, y);
    }

    const slot = plotW / buckets.length;
    const barW = Math.max(1, slot * 0.72);
    buckets.forEach((bucket, index) => {
      let y = baseY;
      const x = pad.left + index * slot + (slot - barW) / 2;
      for (const state of STATES) {
        const count = bucket.counts[state];
        if (!count) continue;
        const h = (count / countMax) * plotH;
        ctx.fillStyle = color(state);
        ctx.fillRect(x, y - h, barW, h);
        y -= h;
      }
    });

    ctx.strokeStyle = color("late");
    ctx.fillStyle = color("late");
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    averages.forEach((value, index) => {
      if (value === null) {
        drawing = false;
        return;
      }
      const x = pad.left + index * slot + slot / 2;
      const y = baseY - (Math.min(value, lateMax) / lateMax) * plotH;
      if (drawing) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
    averages.forEach((value, index) => {
      if (value === null) return;
      const x = pad.left + index * slot + slot / 2;
      const y = baseY - (Math.min(value, lateMax) / lateMax) * plotH;
      ctx.beginPath();
      ctx.arc(x, y, 2.2, 0, Math.PI * 2);
      ctx.fill();
    });

    ctx.fillStyle = color("muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    buckets.forEach((bucket, index) => {
      const date = new Date(bucket.at);
      const last = index === buckets.length - 1;
      // A label every ten minutes, and "now" unless it would touch the one before.
      if (last ? date.getMinutes() % 10 < 4 && date.getMinutes() % 10 !== 0 : date.getMinutes() % 10 !== 0) return;
      const label = last ? "now" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
      ctx.fillText(label, pad.left + index * slot + slot / 2, baseY + 7);
    });
    canvas.dataset.drawn = "true";
  }

  // -- one job --------------------------------------------------------------

  async function refreshJob(uuid, current) {
    const path = `/jobs/${encodeURIComponent(uuid)}`;
    const [job, executions, next] = await Promise.all([
      api("GET", path),
      api("GET", `${path}/executions?${query({ limit: TIMELINE_SLOTS })}`),
      api("GET", `${path}/next?${query({ n: 3 })}`),
    ]);
    if (!current()) return;
    renderJob(job, next);
    renderTimeline(executions.items);
  }

  function fact(label, value, id, extraClass) {
    return el("div", { class: extraClass }, el("dt", { text: label }), el("dd", { id }, value));
  }

  // What a job does when a slot is due while its previous execution runs.
  const POLICIES = {
    allow: "allow: runs may overlap",
    forbid: "forbid: skip the slot while one runs",
    replace: "replace: abandon the running one",
  };

  function known(value, text) {
    return value === undefined || value === null ? "—" : text;
  }

  // The answer a failed attempt got (untrusted text: only ever textContent).
  function responseBody(execution) {
    const body = execution.response_body;
    return execution.state === "failed" && typeof body === "string" && body !== "" ? body : null;
  }

  function renderJob(job, next) {
    $("#job-name").textContent = job.name;
    $("#job-sub").textContent = job.uuid;
    const paused = $("#job-paused");
    paused.className = `badge ${job.paused ? "warn" : "ok"}`;
    paused.textContent = job.paused ? "paused" : "active";
    const toggle = $("#job-toggle-pause");
    toggle.textContent = job.paused ? "Resume" : "Pause";
    toggle.dataset.paused = String(Boolean(job.paused));
    toggle.dataset.jobUuid = job.uuid;
    $("#job-run-now").dataset.jobUuid = job.uuid;
    const upcoming = (next.items || []).map((item) => absolute(item.utc)).join(", ");
    $("#job-facts").replaceChildren(
      fact("Schedule", el("code", { text: job.spec }), "job-spec"),
      fact("Time zone", job.timezone || "UTC"),
      fact("Callback", el("span", { class: "mono", text: job.callback_url })),
      fact("Timeout / retries", `${job.timeout_s} s / ${job.retry_max}`),
      fact(
        "Retry delays",
        known(job.retry_delay_s, `${job.retry_delay_s} s, doubling to ${job.retry_max_delay_s} s`),
        "job-retry-delays",
      ),
      fact("Overlap", known(job.concurrency_policy, POLICIES[job.concurrency_policy] || job.concurrency_policy), "job-concurrency-policy"),
      fact("Missed slots", known(job.coalesce, job.coalesce ? "coalesced into one run" : "each sent"), "job-coalesce"),
      fact("Next run", job.paused ? "paused" : `${relative(job.next_run_at)} (${absolute(job.next_run_at)})`, "job-next"),
      fact("Upcoming", job.paused ? "—" : upcoming || "—"),
      fact("Last run", job.last_run_at ? `${relative(job.last_run_at)} (${absolute(job.last_run_at)})` : "—", "job-last-run"),
      fact("Last status", stateBadge(job.last_status), "job-last-status"),
    );
  }

  function slotFacts(execution) {
    const late = lateness(execution);
    return [
      ["Scheduled", execution.scheduled_at],
      ["Started", execution.started_at || "—"],
      ["Finished", execution.finished_at || "—"],
      ["State", execution.state],
      ["Status code", execution.status_code ?? "—"],
      ["Attempts", execution.attempts ?? "—"],
      ["Node", execution.node_id ?? "—"],
      ["Lateness", latenessText(late)],
      ["Error", execution.error || execution.skip_reason || "—"],
      ["Execution id", execution.execution_id],
      ["Response", responseBody(execution)],
    ].filter(([label, value]) => label !== "Response" || value !== null);
  }

  function renderTimeline(items) {
    hideTooltip();
    view.executions = new Map(items.map((execution) => [execution.execution_id, execution]));
    const slots = [...items].reverse().map((execution) =>
      el("button", {
        type: "button",
        class: `slot state-${execution.state}${execution.execution_id === view.pinned ? " pinned" : ""}`,
        "aria-label": `${execution.scheduled_at} ${execution.state}`,
        dataset: { executionId: execution.execution_id, state: execution.state },
        onmouseenter: (event) => {
          view.hovered = execution.execution_id;
          showTooltip(execution, event.currentTarget);
        },
        onmouseleave: () => {
          view.hovered = null;
          hideTooltip();
        },
        onfocus: (event) => showTooltip(execution, event.currentTarget),
        onblur: hideTooltip,
        onclick: () => {
          view.pinned = execution.execution_id;
          for (const node of document.querySelectorAll("#timeline .slot.pinned")) node.classList.remove("pinned");
          const own = document.querySelector(`#timeline .slot[data-execution-id="${CSS.escape(execution.execution_id)}"]`);
          if (own) own.classList.add("pinned");
          renderSlotDetail();
        },
      }),
    );
    const timeline = $("#timeline");
    timeline.replaceChildren(...(slots.length ? slots : [el("p", { class: "muted", text: "No executions yet." })]));
    // The slot under the mouse was just replaced: keep its tooltip up.
    const hovered = view.hovered && view.executions.get(view.hovered);
    const hoveredSlot = hovered && slots.find((slot) => slot.dataset.executionId === hovered.execution_id);
    if (hoveredSlot) showTooltip(hovered, hoveredSlot);
    else view.hovered = null;
    legend($("#timeline-legend"), false);
    renderSlotDetail();
    const rows = items.slice(0, 15).map((execution) =>
      el(
        "tr",
        { dataset: { executionId: execution.execution_id } },
        el("td", { title: execution.scheduled_at, text: absolute(execution.scheduled_at) }),
        el("td", {}, stateBadge(execution.state)),
        el("td", { class: "num", text: execution.status_code ?? "—" }),
        el("td", { class: "num", text: execution.attempts ?? "—" }),
        el("td", { class: "num", text: execution.node_id ?? "—" }),
        el("td", { class: "num", text: latenessText(lateness(execution)) }),
        el(
          "td",
          { class: "wrap", title: execution.error || undefined },
          execution.error || execution.skip_reason || "",
          responseBody(execution) === null ? null : el("div", { class: "response-body mono", title: responseBody(execution), text: responseBody(execution) }),
        ),
      ),
    );
    $("#executions tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: "7", text: "No executions yet." }))]));
  }

  function renderSlotDetail() {
    const detail = $("#slot-detail");
    const execution = view.pinned && view.executions.get(view.pinned);
    if (!execution) {
      detail.replaceChildren();
      detail.removeAttribute("data-execution-id");
      return;
    }
    detail.dataset.executionId = execution.execution_id;
    detail.replaceChildren(
      ...slotFacts(execution).map(([label, value]) =>
        label === "Response" ? fact(label, el("pre", { class: "response-body", text: value }), "slot-response", "wide") : fact(label, String(value)),
      ),
    );
  }

  function showTooltip(execution, target) {
    const tooltip = $("#tooltip");
    tooltip.replaceChildren(
      ...slotFacts(execution)
        .filter(([label]) => label !== "Execution id" && label !== "Finished" && label !== "Response")
        .map(([label, value]) => el("div", {}, el("b", { text: `${label}:` }), String(value))),
    );
    show(tooltip, true);
    const box = target.getBoundingClientRect();
    const width = tooltip.offsetWidth;
    const left = Math.min(window.innerWidth - width - 8, Math.max(8, box.left + box.width / 2 - width / 2));
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${box.bottom + 8}px`;
  }

  function hideTooltip() {
    show($("#tooltip"), false);
  }

  // -- actions --------------------------------------------------------------

  let toastTimer = null;

  function toast(message) {
    const node = $("#toast");
    node.textContent = message;
    show(node, true);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => show(node, false), 3500);
  }

  async function act(button, work) {
    button.disabled = true;
    try {
      await work();
    } catch (error) {
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      toast(`Failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  function setPaused(uuid, paused, button) {
    return act(button, async () => {
      const job = await api("PATCH", `/jobs/${encodeURIComponent(uuid)}`, { paused });
      toast(`${job.name}: ${job.paused ? "paused" : "resumed"}`);
    });
  }

  function runNow(uuid, button) {
    return act(button, async () => {
      const execution = (await api("POST", `/jobs/${encodeURIComponent(uuid)}/run`)) || {};
      toast(execution.scheduled_at ? `Extra execution started at ${absolute(execution.scheduled_at)}` : "Extra execution started");
      if (execution.execution_id) $("#toast").dataset.executionId = execution.execution_id;
    });
  }

  // -- start ----------------------------------------------------------------

  function start() {
    legend($("#chart-legend"), true, OUTCOMES);
    $("#signin-form").addEventListener("submit", signIn);
    $("#sign-out").addEventListener("click", () => signOut());
    $("#job-toggle-pause").addEventListener("click", (event) => {
      const button = event.currentTarget;
      if (button.dataset.jobUuid) setPaused(button.dataset.jobUuid, button.dataset.paused !== "true", button);
    });
    $("#job-run-now").addEventListener("click", (event) => {
      const button = event.currentTarget;
      if (button.dataset.jobUuid) runNow(button.dataset.jobUuid, button);
    });
    window.addEventListener("hashchange", () => {
      view.pinned = null;
      route();
    });
    window.addEventListener("resize", drawChart);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && credential()) refresh();
    });
    route();
  }

  start();
})();
