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
  // Rows per page a list may show: the API's pages, never the whole list.
  const PAGE_SIZES = [10, 25, 50, 100];
  const DEFAULT_PAGE_SIZE = 25;
  const PREVIEW_SLOTS = 5;
  const TYPING_MS = 300;

  const $ = (selector) => document.querySelector(selector);

  const view = {
    generation: 0,
    timer: null,
    pinned: null, // execution_id whose details stay shown on the job view
    hovered: null, // execution_id under the mouse, kept across re-renders
    chart: null, // the last chart data, to redraw on resize
    executions: new Map(), // execution_id -> execution on the job view
    back: {}, // a list's key -> the pages before this one, for "Previous"
    listed: "", // the route and filters the lists were last drawn for
    openapi: null, // the API's OpenAPI document, once read (the job form is made from it)
    job: null, // the job the job view shows
  };

  class ApiError extends Error {
    constructor(status, message, data, fields) {
      super(message);
      this.status = status;
      this.data = data === undefined ? null : data;
      // The error envelope's fields: a field's name -> what is wrong with it.
      this.fields = fields && typeof fields === "object" ? fields : {};
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

  async function api(method, path, body, { raw = false } = {}) {
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
      const error = (payload && payload.error) || {};
      const message = error.message || `HTTP ${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, payload && payload.data, error.fields);
    }
    // The OpenAPI document comes as it is, without the envelope.
    return raw ? payload : payload.data;
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
    show($("#nav"), false);
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
    show($("#nav"), true);
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

  // -- where the page is: the route and its lists' state, in the hash ----------
  //
  // #/                      jobs and projects (filters and pages as ?params)
  // #/job/<uuid>            one job and its executions
  // #/job/<uuid>/edit       the job's form
  // #/new                   a new job's form
  // #/executions            every execution
  // A reload or a shared link shows the same page, filters and search.

  function hashParams() {
    const at = location.hash.indexOf("?");
    return new URLSearchParams(at < 0 ? "" : location.hash.slice(at + 1));
  }

  function currentRoute() {
    const path = location.hash.split("?")[0].replace(/^#/, "") || "/";
    let match = path.match(/^\/job\/([^/]+)\/edit$/);
    if (match) return { name: "form", uuid: decodeURIComponent(match[1]) };
    match = path.match(/^\/job\/([^/]+)$/);
    if (match) return { name: "job", uuid: decodeURIComponent(match[1]) };
    if (path === "/new") return { name: "form", uuid: null };
    if (path === "/executions") return { name: "executions" };
    return { name: "overview" };
  }

  // Change some of the hash's parameters (null or "" removes one). A new
  // page or filter is a new history entry; typing replaces the entry.
  function setParams(changes, { replace = false } = {}) {
    const params = hashParams();
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === "") params.delete(key);
      else params.set(key, String(value));
    }
    const text = params.toString();
    const hash = `#${location.hash.split("?")[0].replace(/^#/, "") || "/"}${text ? `?${text}` : ""}`;
    if (hash === location.hash) return;
    if (replace) {
      history.replaceState(null, "", hash);
      route();
    } else {
      location.hash = hash;
    }
  }

  function route() {
    view.hovered = null;
    if (!credential()) {
      showSignIn();
      return;
    }
    // Signed in in this tab before a reload: straight to the page.
    showApp();
    const current = currentRoute();
    show($("#view-overview"), current.name === "overview");
    show($("#view-job"), current.name === "job");
    show($("#view-form"), current.name === "form");
    // The executions card: its own view, or under the job it is filtered to.
    const executions = $("#executions-card");
    if (current.name === "job") $("#view-job").append(executions);
    else $("#view-executions").append(executions);
    show($("#view-executions"), current.name === "executions");
    for (const [id, name] of [["#nav-jobs", "overview"], ["#nav-executions", "executions"]]) {
      $(id).classList.toggle("current", current.name === name);
    }
    show($("#delete-confirm"), false);
    show($("#bulk-confirm"), false);
    bulk.action = null;
    hideTooltip();
    syncFilters(current);
    if (current.name === "form") openForm(current.uuid);
    refresh();
  }

  // -- pages of a list ----------------------------------------------------------
  //
  // A list's page is its parameters <key>cursor (the API's next_cursor: a
  // page found through the index, so page N costs what page 1 does) or
  // <key>offset (a page reached by going back after a reload), and
  // <key>size. "Previous" returns to the pages this tab went through.

  function pageQuery(key) {
    const params = hashParams();
    const size = Number(params.get(`${key}size`));
    const limit = PAGE_SIZES.includes(size) ? size : DEFAULT_PAGE_SIZE;
    const cursor = params.get(`${key}cursor`);
    if (cursor) return { limit, cursor };
    const offset = Number(params.get(`${key}offset`));
    return { limit, offset: Number.isInteger(offset) && offset > 0 ? offset : undefined };
  }

  function firstPage(key) {
    view.back[key] = [];
    return { [`${key}cursor`]: null, [`${key}offset`]: null };
  }

  function renderPager(container, key, page, noun) {
    const from = page.total === 0 || !page.items.length ? 0 : page.offset + 1;
    const to = page.offset + page.items.length;
    const count = (n) => n.toLocaleString();
    const label = page.total === 0 ? `No ${noun}` : `${count(from)}–${count(to)} of ${count(page.total)}`;
    const here = { [`${key}cursor`]: hashParams().get(`${key}cursor`), [`${key}offset`]: hashParams().get(`${key}offset`) };
    const back = (view.back[key] = view.back[key] || []);
    const size = el(
      "select",
      {
        class: "page-size",
        "aria-label": "Rows per page",
        onchange: (event) => setParams({ ...firstPage(key), [`${key}size`]: event.currentTarget.value }),
      },
      PAGE_SIZES.map((n) => el("option", { value: String(n), selected: n === page.limit, text: `${n} per page` })),
    );
    const button = (text, action, enabled, onclick) =>
      el("button", { type: "button", class: "button small", text, disabled: !enabled, dataset: { page: action }, onclick });
    container.dataset.from = String(from);
    container.dataset.to = String(to);
    container.dataset.total = String(page.total);
    container.replaceChildren(
      el("span", { class: "page-label", text: label }),
      el("span", { class: "spacer" }),
      size,
      button("First", "first", page.offset > 0, () => setParams(firstPage(key))),
      button("Previous", "previous", page.offset > 0, () => {
        const before = back.pop();
        if (before) setParams(before);
        else setParams({ [`${key}cursor`]: null, [`${key}offset`]: Math.max(0, page.offset - page.limit) || null });
      }),
      button("Next", "next", Boolean(page.next_cursor), () => {
        back.push(here);
        setParams({ [`${key}cursor`]: page.next_cursor, [`${key}offset`]: null });
      }),
    );
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
      else if (where.name === "executions") await refreshExecutions(null, current);
      // The form is not redrawn under the user's typing.
      else if (where.name === "overview") await refreshOverview(health, current);
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

  // What the jobs list asks the API for, from the hash.
  function jobFilters() {
    const params = hashParams();
    const state = params.get("state");
    return {
      project_uuid: params.get("project") || undefined,
      name_prefix: params.get("q") || undefined,
      selector: params.get("selector") || undefined,
      paused: state === "paused" ? "true" : state === "active" ? "false" : undefined,
    };
  }

  // The jobs page, or an empty one while the label selector is one the API
  // refuses: its message (naming the term) shows beside the box instead.
  async function jobsPage() {
    const problem = $("#jobs-selector-error");
    try {
      const page = await api("GET", `/jobs?${query({ ...jobFilters(), ...pageQuery("") })}`);
      show(problem, false);
      return page;
    } catch (error) {
      if (error.status !== 400 || !error.fields.selector) throw error;
      problem.textContent = error.fields.selector;
      show(problem, true);
      return { items: [], total: 0, offset: 0, limit: pageQuery("").limit, next_cursor: null, refused: true };
    }
  }

  async function refreshOverview(health, current) {
    const rest = Promise.all([
      jobsPage(),
      api("GET", `/projects?${query(pageQuery("p"))}`),
      projectChoices(),
      recentExecutions(),
      api("GET", `/executions/summary?${query({ minutes: 60 })}`),
    ]);
    rest.catch(() => {}); // awaited below, once the cluster is drawn
    // The cluster first: without a quorum the rest cannot be read, and the
    // cluster card is what shows why.
    const cluster = await clusterView();
    if (!current()) return;
    renderCluster(health, cluster);
    const [jobs, projects, choices, recent, summary] = await rest;
    if (!current()) return;
    renderChart(summary);
    renderProjectChoices($("#jobs-project"), choices, hashParams().get("project") || "", "All projects");
    renderJobs(jobs, recent.items, choices);
    renderProjectList(projects);
  }

  // The projects a job can be in or the jobs list filtered to: the API's
  // first page of at most 1000 (a project further on still shows when it
  // is the one chosen).
  async function projectChoices(chosen = hashParams().get("project")) {
    const page = await api("GET", `/projects?${query({ limit: 1000 })}`);
    if (chosen && !page.items.some((project) => project.uuid === chosen)) {
      try {
        page.items.push(await api("GET", `/projects/${encodeURIComponent(chosen)}`));
      } catch (error) {
        if (error.status !== 404) throw error;
      }
    }
    return page.items;
  }

  function renderProjectChoices(select, projects, chosen, none) {
    if (document.activeElement === select) return; // not while it is open
    const options = projects.map((project) => el("option", { value: project.uuid, text: project.name }));
    if (none !== null) options.unshift(el("option", { value: "", text: none }));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  // The filters' boxes show what the hash says (not the one being typed in).
  function syncFilters(where) {
    const params = hashParams();
    if (where.name === "overview") {
      const search = $("#jobs-search");
      if (document.activeElement !== search) search.value = params.get("q") || "";
      const selector = $("#jobs-selector");
      if (document.activeElement !== selector) selector.value = params.get("selector") || "";
      if (!params.get("selector")) show($("#jobs-selector-error"), false);
      $("#jobs-state").value = params.get("state") || "";
      if ([...$("#jobs-project").options].some((option) => option.value === (params.get("project") || ""))) {
        $("#jobs-project").value = params.get("project") || "";
      }
      $("#jobs-new").setAttribute("href", `#/new${params.get("project") ? `?project=${encodeURIComponent(params.get("project"))}` : ""}`);
    } else if (where.name === "job" || where.name === "executions") {
      $("#exec-state").value = params.get("estate") || "";
      $("#exec-since").value = localInput(params.get("since"));
      $("#exec-until").value = localInput(params.get("until"));
      show($("#exec-filter-error"), false);
    }
    const filtered = `${where.name}|${where.uuid || ""}`;
    if (filtered !== view.listed) {
      view.listed = filtered;
      view.back = {};
    }
  }

  // An RFC 3339 instant as a datetime-local input shows it (this browser's zone).
  function localInput(text) {
    const ms = parseTime(text);
    if (ms === null) return "";
    const date = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
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
    // Last contact as the leader counts it: GET /cluster has it for every
    // member whichever one answers (a follower's own health knows none);
    // the health's copy is for a leader of a release before that.
    const contact = new Map((health.members || []).map((member) => [member.node_id, member.last_contact]));
    const rows = (cluster.members || []).map((member) => {
      const lastContact = member.last_contact ?? contact.get(member.node_id);
      const known = typeof lastContact === "number";
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
        el("td", { class: "num col-last-contact", dataset: { lastContact: known ? String(lastContact) : "" }, text: known ? `${span(lastContact)} ago` : "—" }),
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

  function renderJobs(page, recent, projects) {
    const byJob = new Map();
    for (const execution of recent) {
      if (!byJob.has(execution.job_uuid)) byJob.set(execution.job_uuid, []);
      byJob.get(execution.job_uuid).push(execution);
    }
    for (const list of byJob.values()) list.sort((a, b) => (a.scheduled_at < b.scheduled_at ? 1 : -1));
    const names = new Map(projects.map((project) => [project.uuid, project.name]));
    const pausedProjects = new Set(projects.filter((project) => project.paused).map((project) => project.uuid));
    const filtered = Object.values(jobFilters()).some((value) => value !== undefined);
    $("#jobs-count").textContent = `${page.total.toLocaleString()} job${page.total === 1 ? "" : "s"}${filtered ? " match" : ""}`;
    renderPager($("#jobs-pager"), "", page, "jobs");
    renderBulkBar(page, names);
    const list = $("#job-list");
    if (!page.items.length) {
      const empty = page.refused ? "Fix the label selector to list jobs." : filtered ? "No job matches these filters." : "No jobs yet: create one with New job.";
      list.replaceChildren(el("p", { class: "empty", text: empty }));
      return;
    }
    const rows = page.items.map((job) =>
      el(
        "tr",
        { class: "job-row", dataset: { jobUuid: job.uuid } },
        el("td", {}, el("a", { class: "job-name", href: `#/job/${encodeURIComponent(job.uuid)}`, text: job.name }), el("span", { class: "job-id mono", text: job.uuid })),
        el(
          "td",
          { class: "col-project" },
          names.get(job.project_uuid) || job.project_uuid,
          pausedProjects.has(job.project_uuid) ? el("span", { class: "job-id project-paused", title: "Its project is paused: it fires nothing", text: "project paused" }) : null,
        ),
        el("td", { class: "col-labels" }, labelChips(job.labels)),
        el("td", {}, el("code", { text: job.spec }), job.timezone && job.timezone !== "UTC" ? el("span", { class: "job-id", text: job.timezone }) : null),
        el("td", { class: "col-state" }, el("span", { class: `badge ${job.paused ? "warn" : "ok"}`, text: job.paused ? "paused" : "active" })),
        job.paused ? el("td", { class: "col-next muted", text: "paused" }) : timeCell(job.next_run_at, "col-next"),
        timeCell(job.last_run_at, "col-last-run"),
        el("td", { class: "col-last-status" }, stateBadge(job.last_status)),
        el("td", { class: "col-recent" }, strip(byJob.get(job.uuid) || [])),
        el("td", {}, jobActions(job)),
      ),
    );
    list.replaceChildren(
      el(
        "table",
        { class: "table jobs" },
        el("thead", {}, el("tr", {}, ["Job", "Project", "Labels", "Schedule", "State", "Next run", "Last run", "Last status", "Recent", ""].map((title) => el("th", { text: title })))),
        el("tbody", {}, rows),
      ),
    );
  }

  function renderProjectList(page) {
    $("#projects-count").textContent = `${page.total.toLocaleString()} project${page.total === 1 ? "" : "s"}`;
    renderPager($("#projects-pager"), "p", page, "projects");
    const list = $("#project-list");
    if (!page.items.length) {
      list.replaceChildren(el("p", { class: "empty", text: "No projects yet: create one with POST /api/v1/projects." }));
      return;
    }
    const rows = page.items.map((project) =>
      el(
        "tr",
        { class: "project", dataset: { projectUuid: project.uuid } },
        el("td", {}, el("a", { class: "project-name", href: `#/?project=${encodeURIComponent(project.uuid)}`, title: "Show this project's jobs", text: project.name })),
        el("td", { class: "wrap muted", text: project.description || "" }),
        el("td", { class: "wrap" }, project.notify_url ? el("span", { class: "muted small mono project-notify", title: "Failure notices go here", text: `notices → ${project.notify_url}` }) : null),
        el("td", { class: "col-state" }, el("span", { class: `badge ${project.paused ? "warn" : "ok"}`, text: project.paused ? "paused" : "active" })),
        el("td", {}, el("div", { class: "actions" }, projectPauseButton(project), el("a", { class: "button small", href: `#/new?project=${encodeURIComponent(project.uuid)}`, text: "New job" }))),
      ),
    );
    list.replaceChildren(
      el(
        "table",
        { class: "table projects" },
        el("thead", {}, el("tr", {}, ["Project", "Description", "Failure notices", "State", ""].map((title) => el("th", { text: title })))),
        el("tbody", {}, rows),
      ),
    );
  }

  // A paused project fires none of its jobs (each keeps its own paused).
  function projectPauseButton(project) {
    const button = el("button", {
      class: "button small",
      type: "button",
      text: project.paused ? "Resume" : "Pause",
      dataset: { action: project.paused ? "resume" : "pause", projectUuid: project.uuid },
      onclick: () =>
        act(button, async () => {
          const changed = await api("PATCH", `/projects/${encodeURIComponent(project.uuid)}`, { paused: !project.paused });
          toast(`Project ${changed.name}: ${changed.paused ? "paused" : "resumed"}`);
        }),
    });
    return button;
  }

  // -- labels and the label selector --------------------------------------------

  // The term a label chip stands for: key=value (key= for an empty value).
  const labelTerm = (key, value) => `${key}=${value}`;

  function selectorTerms(text) {
    return (text || "").split(",").map((term) => term.trim()).filter(Boolean);
  }

  // A job's labels as chips; a click adds the chip's term to the selector.
  function labelChips(labels) {
    const entries = Object.entries(labels || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return el(
      "div",
      { class: "chips" },
      entries.map(([key, value]) =>
        el("button", {
          type: "button",
          class: "chip",
          title: `List the jobs with ${labelTerm(key, value)}`,
          text: labelTerm(key, value),
          dataset: { term: labelTerm(key, value) },
          onclick: () => addSelectorTerm(labelTerm(key, value)),
        }),
      ),
    );
  }

  function addSelectorTerm(term) {
    const where = currentRoute();
    const terms = selectorTerms(where.name === "overview" ? hashParams().get("selector") : "");
    if (!terms.includes(term)) terms.push(term);
    const selector = terms.join(",");
    if (where.name === "overview") setParams({ selector, ...firstPage("") });
    else location.hash = `#/?${query({ selector })}`;
  }

  // -- bulk actions on what the label selector selects ---------------------------
  //
  // POST /jobs/bulk/<action>?selector=&project_uuid= changes at most 1000 jobs
  // a request and says "more" while others remain: it is sent again until
  // none do. The list's name and state filters do not narrow it.

  const BULK = {
    pause: { verb: "Pause", done: "paused", paused: "false", which: "active " },
    resume: { verb: "Resume", done: "resumed", paused: "true", which: "paused " },
    delete: { verb: "Delete", done: "deleted", paused: undefined, which: "" },
  };
  // Requests one bulk action may send (1000 jobs each): a bound, never reached in practice.
  const BULK_ROUNDS = 10000;
  // The action asked about, and what the jobs list last showed (its total, its projects' names).
  const bulk = { action: null, selector: null, project: null, count: 0, listed: 0, names: new Map() };

  function bulkScope(names) {
    const project = hashParams().get("project");
    return project ? `in the project ${names.get(project) || project}` : "in every project";
  }

  function renderBulkBar(page, names) {
    const selector = hashParams().get("selector");
    const bar = $("#jobs-bulk");
    show(bar, Boolean(selector) && !page.refused);
    if (!selector) return;
    bulk.listed = page.total;
    bulk.names = names;
    $("#jobs-bulk-text").textContent = `Bulk actions apply to the jobs “${selector}” selects ${bulkScope(names)}.`;
  }

  async function askBulk(action, button) {
    const selector = hashParams().get("selector");
    if (!selector || !BULK[action]) return;
    const project = hashParams().get("project") || undefined;
    await act(button, async () => {
      // What the action would change: pause changes active jobs, resume paused ones.
      const page = await api("GET", `/jobs?${query({ selector, project_uuid: project, paused: BULK[action].paused, limit: 1 })}`);
      Object.assign(bulk, { action, selector, project, count: page.total });
      const { verb, which } = BULK[action];
      const plural = (n) => `${n.toLocaleString()} job${n === 1 ? "" : "s"}`;
      if (!page.total) {
        toast(`No ${which}job to ${action}: “${selector}” selects none ${bulkScope(bulk.names)}`);
        return;
      }
      const listed = bulk.listed === page.total ? "" : ` (the list shows ${plural(bulk.listed)}: its name and state filters do not narrow a bulk action)`;
      const jobs = `${page.total.toLocaleString()} ${which}job${page.total === 1 ? "" : "s"}`;
      let text = `${verb} the ${jobs} that “${selector}” selects ${bulkScope(bulk.names)}${listed}?`;
      if (action === "delete") text += ` They stop firing, and this cannot be undone. Type ${page.total} to confirm.`;
      $("#bulk-confirm-text").textContent = text;
      const typed = $("#bulk-confirm-typed");
      typed.value = "";
      show($("#bulk-confirm-typed-label"), action === "delete");
      const yes = $("#bulk-confirm-yes");
      yes.textContent = `${verb} ${plural(page.total)}`;
      yes.className = `button ${action === "delete" ? "danger-solid" : "primary"}`;
      yes.disabled = action === "delete";
      yes.dataset.action = action;
      show($("#bulk-confirm"), true);
      (action === "delete" ? typed : $("#bulk-confirm-no")).focus();
    });
  }

  async function runBulk(button) {
    const { action, selector, project } = bulk;
    if (!action || button.dataset.action !== action) return;
    if (action === "delete" && $("#bulk-confirm-typed").value.trim() !== String(bulk.count)) return;
    let changed = 0;
    await act(button, async () => {
      try {
        for (let round = 0; round < BULK_ROUNDS; round += 1) {
          const answer = await api("POST", `/jobs/bulk/${action}?${query({ selector, project_uuid: project })}`);
          changed += answer.count;
          $("#bulk-confirm-text").textContent = `${BULK[action].verb}: ${changed.toLocaleString()} done…`;
          if (!answer.more || !answer.count) break;
        }
      } catch (error) {
        if (changed) error.message = `${error.message} (after ${changed.toLocaleString()} ${BULK[action].done})`;
        throw error;
      } finally {
        bulk.action = null;
        show($("#bulk-confirm"), false);
      }
      toast(`${changed.toLocaleString()} job${changed === 1 ? "" : "s"} ${BULK[action].done}`);
      $("#toast").dataset.bulk = `${action}:${changed}`;
    });
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
    view.job = job;
    renderJob(job, next);
    renderTimeline(executions.items);
    await refreshExecutions(job, current);
  }

  // -- executions, filtered and paged -----------------------------------------

  // What the executions list asks the API for, from the hash: e-prefixed
  // (estate, ecursor, ...) so they do not clash with the jobs list's.
  function executionFilters() {
    const params = hashParams();
    return { state: params.get("estate") || undefined, since: params.get("since") || undefined, until: params.get("until") || undefined };
  }

  async function refreshExecutions(job, current) {
    const path = job ? `/jobs/${encodeURIComponent(job.uuid)}/executions` : "/executions";
    let page;
    try {
      page = await api("GET", `${path}?${query({ ...executionFilters(), ...pageQuery("e") })}`);
    } catch (error) {
      if (error.status !== 400) throw error;
      // A time range the API refuses (until before since): say which.
      if (!current()) return;
      const problem = $("#exec-filter-error");
      problem.textContent = Object.values(error.fields)[0] || error.message;
      show(problem, true);
      return;
    }
    if (!current()) return;
    show($("#exec-filter-error"), false);
    $("#executions-title").textContent = job ? "Executions" : "All executions";
    const filtered = Object.values(executionFilters()).some((value) => value !== undefined);
    $("#executions-count").textContent = `${page.total.toLocaleString()} execution${page.total === 1 ? "" : "s"}${filtered ? " match" : ""}${page.missing_nodes && page.missing_nodes.length ? ` (nodes ${page.missing_nodes.join(", ")} did not answer)` : ""}`;
    renderPager($("#exec-pager"), "e", page, "executions");
    renderExecutionRows(page.items, !job);
  }

  function renderExecutionRows(items, withJob) {
    const titles = ["Scheduled", "State", "Status", "Attempts", "Node", "Lateness", "Error"];
    if (withJob) titles.splice(1, 0, "Job");
    $("#executions thead tr").replaceChildren(...titles.map((title) => el("th", { class: ["Status", "Attempts", "Node", "Lateness"].includes(title) ? "num" : undefined, text: title })));
    const rows = items.map((execution) =>
      el(
        "tr",
        { dataset: { executionId: execution.execution_id, state: execution.state } },
        el("td", { title: execution.scheduled_at, text: absolute(execution.scheduled_at) }),
        withJob ? el("td", {}, el("a", { class: "mono small", href: `#/job/${encodeURIComponent(execution.job_uuid)}`, text: execution.job_uuid })) : null,
        el("td", { class: "col-state" }, stateBadge(execution.state)),
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
    $("#executions tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: String(titles.length), text: "No executions match." }))]));
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
    $("#job-edit").setAttribute("href", `#/job/${encodeURIComponent(job.uuid)}/edit`);
    $("#job-delete").dataset.jobUuid = job.uuid;
    const upcoming = (next.items || []).map((item) => absolute(item.utc)).join(", ");
    $("#job-facts").replaceChildren(
      fact("Schedule", el("code", { text: job.spec }), "job-spec"),
      fact("Time zone", job.timezone || "UTC"),
      fact("Callback", el("span", { class: "mono", text: job.callback_url })),
      fact("Labels", Object.keys(job.labels || {}).length ? labelChips(job.labels) : "—", "job-labels"),
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

  // -- the job form: made from the API's own OpenAPI document ----------------
  //
  // Its fields are the writable fields the document lists for a job (JobInput
  // to create one, JobPatch to change one), so a field the API gains shows
  // here without a change to this page. Each field's problems, as the API
  // words them, show beside it; the next runs show as the schedule is typed.

  const form = { uuid: null, job: null, seq: 0, previewTimer: null, previewSeq: 0 };

  async function openapiDocument() {
    if (!view.openapi) view.openapi = await api("GET", "/openapi.json", undefined, { raw: true });
    return view.openapi;
  }

  async function openForm(uuid) {
    const token = (form.seq += 1);
    form.uuid = uuid;
    form.job = null;
    clearTimeout(form.previewTimer);
    // Set once this form's fields are drawn (for whoever waits on them).
    delete $("#job-form").dataset.loaded;
    $("#form-title").textContent = uuid ? "Edit job" : "New job";
    $("#form-submit").textContent = uuid ? "Save changes" : "Create job";
    $("#form-sub").textContent = uuid ? "Only the fields you change are sent." : "Fields left empty take the node's defaults.";
    const back = uuid ? `#/job/${encodeURIComponent(uuid)}` : `#/${hashParams().get("project") ? `?project=${encodeURIComponent(hashParams().get("project"))}` : ""}`;
    $("#form-back").setAttribute("href", back);
    $("#form-cancel").setAttribute("href", back);
    $("#form-fields").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    show($("#form-error"), false);
    try {
      const job = uuid ? await api("GET", `/jobs/${encodeURIComponent(uuid)}`) : null;
      const [doc, projects] = await Promise.all([openapiDocument(), projectChoices(job ? job.project_uuid : hashParams().get("project"))]);
      if (token !== form.seq) return;
      const schemas = doc.components.schemas;
      form.job = job;
      if (job) $("#form-title").textContent = `Edit ${job.name}`;
      buildForm(uuid ? schemas.JobPatch : schemas.JobInput, projects, job);
      $("#job-form").dataset.loaded = uuid || "new";
      schedulePreview(0);
    } catch (error) {
      if (token !== form.seq) return;
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      $("#form-fields").replaceChildren();
      showFormError(`Could not open the form: ${error.message}`);
    }
  }

  function fieldKind(name, prop) {
    if (name === "project_uuid") return "project";
    if (Array.isArray(prop.enum)) return "enum";
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    if (type === "boolean" || type === "number" || type === "integer" || type === "string") return type;
    // An object of strings to strings (labels): typed as key=value lines.
    const values = prop.additionalProperties;
    if (type === "object" && values && typeof values === "object" && values.type === "string") return "map";
    return "json"; // any JSON value, an object or an array: typed as JSON
  }

  function buildForm(schema, projects, job) {
    const required = new Set(job ? [] : schema.required || []);
    const rows = Object.entries(schema.properties || {}).map(([name, prop]) => fieldRow(name, prop, required.has(name), projects, job));
    $("#form-fields").replaceChildren(...rows);
  }

  function fieldRow(name, prop, isRequired, projects, job) {
    const kind = fieldKind(name, prop);
    const id = `field-${name}`;
    const current = job ? job[name] : undefined;
    const known = current !== undefined && current !== null;
    let input;
    if (kind === "project") {
      input = el("select", { id, name });
      const chosen = job ? job.project_uuid : hashParams().get("project") || (projects[0] ? projects[0].uuid : "");
      renderProjectChoices(input, projects, chosen, null);
    } else if (kind === "enum") {
      input = el("select", { id, name }, job ? null : el("option", { value: "", text: "(default)" }), prop.enum.map((value) => el("option", { value: String(value), text: String(value) })));
      input.value = known ? String(current) : "";
    } else if (kind === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = Boolean(current);
    } else if (kind === "map") {
      input = el("textarea", { id, name, rows: "3", spellcheck: "false", placeholder: "team=billing\nenv=prod" });
      input.value = Object.entries(current || {}).map(([key, value]) => `${key}=${value}`).join("\n");
    } else if (kind === "json") {
      input = el("textarea", { id, name, rows: "3", spellcheck: "false", placeholder: "JSON" });
      input.value = current === undefined ? "" : JSON.stringify(current, null, 2);
    } else {
      // Numbers too are typed as text: the API words what is wrong with one.
      const numeric = kind === "number" || kind === "integer";
      input = el("input", { id, name, type: "text", spellcheck: "false", inputmode: numeric ? (kind === "integer" ? "numeric" : "decimal") : undefined });
      input.value = known ? String(current) : "";
      if (name === "spec" || name === "timezone") input.addEventListener("input", () => schedulePreview(TYPING_MS));
    }
    input.dataset.kind = kind;
    const label = el("label", { for: id }, name, isRequired ? el("span", { class: "required", title: "required", text: " *" }) : null);
    const about = kind === "map" ? `One key=value a line (key= for an empty value). ${prop.description || ""}` : prop.description;
    const help = about ? el("p", { class: "help muted small", text: about }) : null;
    const error = el("p", { id: `error-${name}`, class: "field-error", role: "alert", hidden: true });
    const row = el("div", { class: `field field-${kind}`, dataset: { field: name } }, label, input, error, help);
    if (name === "spec") row.append(el("div", { id: "preview", class: "preview", "aria-live": "polite" }));
    return row;
  }

  // What the form sends: for a new job the fields filled in, for a job
  // being edited the fields that differ from it; and what cannot be sent.
  function formBody() {
    const body = {};
    const problems = {};
    for (const input of $("#form-fields").querySelectorAll("[data-kind]")) {
      const { name } = input;
      const kind = input.dataset.kind;
      let value;
      if (kind === "boolean") {
        value = input.checked;
        if (!form.job && !value) continue;
      } else if (kind === "map") {
        const parsed = mapValue(name, input.value);
        if (parsed.problem) {
          problems[name] = parsed.problem;
          continue;
        }
        value = parsed.value;
        // Empty: a new job takes the default; an edit may remove them all.
        if (!form.job && !Object.keys(value).length) continue;
      } else {
        const text = input.value.trim();
        if (text === "") continue;
        if (kind === "json") {
          try {
            value = JSON.parse(text);
          } catch (error) {
            problems[name] = `${name}: is not JSON (${error.message})`;
            continue;
          }
        } else if (kind === "number" || kind === "integer") {
          value = Number.isFinite(Number(text)) ? Number(text) : text;
        } else {
          value = kind === "string" ? input.value : text;
        }
      }
      if (form.job && sameValue(form.job[name], value, kind)) continue;
      body[name] = value;
    }
    return { body, problems };
  }

  function sameValue(before, after, kind) {
    if (kind !== "map") return JSON.stringify(before ?? null) === JSON.stringify(after);
    const old = before || {};
    return Object.keys(old).length === Object.keys(after).length && Object.entries(after).every(([key, value]) => old[key] === value);
  }

  // key=value lines as an object; the API checks the keys and values.
  function mapValue(name, text) {
    const value = {};
    const lines = text.split("\n").map((line) => line.trim());
    for (const [index, line] of lines.entries()) {
      if (!line) continue;
      const at = line.indexOf("=");
      if (at < 0) return { problem: `${name}: line ${index + 1} (“${line}”) is not key=value` };
      const key = line.slice(0, at).trim();
      if (Object.prototype.hasOwnProperty.call(value, key)) return { problem: `${name}: the key “${key}” is given twice` };
      value[key] = line.slice(at + 1).trim();
    }
    return { value };
  }

  function clearFieldError(name) {
    const slot = document.getElementById(`error-${name}`);
    if (!slot) return;
    slot.textContent = "";
    show(slot, false);
    slot.closest(".field").classList.remove("invalid");
  }

  // The form's slot for a field's message: its own, or for a part of a
  // field (labels.team) the field's.
  function errorSlot(name) {
    const own = document.getElementById(`error-${name}`);
    if (own && own.closest("#form-fields")) return own;
    const whole = name.split(/[.[]/)[0];
    const slot = whole !== name ? document.getElementById(`error-${whole}`) : null;
    return slot && slot.closest("#form-fields") ? slot : null;
  }

  // Each field's message beside it; true when every one had a place.
  function placeFieldErrors(fields) {
    let placed = 0;
    const filled = new Set();
    const entries = Object.entries(fields || {});
    for (const [name, field] of entries) {
      const slot = errorSlot(name);
      if (!slot) continue;
      // A part's message says which part, unless it already does.
      const part = slot.id === `error-${name}` || field.includes(name) ? field : `${name}: ${field}`;
      const message = filled.has(slot) ? `${slot.textContent}; ${part}` : part;
      filled.add(slot);
      slot.textContent = message;
      show(slot, true);
      slot.closest(".field").classList.add("invalid");
      placed += 1;
    }
    return entries.length > 0 && placed === entries.length;
  }

  function showFormError(message) {
    const box = $("#form-error");
    box.textContent = message;
    show(box, Boolean(message));
  }

  async function submitForm(event) {
    event.preventDefault();
    for (const slot of $("#form-fields").querySelectorAll(".field-error")) clearFieldError(slot.id.slice("error-".length));
    showFormError("");
    const { body, problems } = formBody();
    if (Object.keys(problems).length) {
      placeFieldErrors(problems);
      showFormError("Fix the fields marked above.");
      return;
    }
    const button = $("#form-submit");
    button.disabled = true;
    try {
      let job;
      if (form.job) {
        if (!Object.keys(body).length) {
          toast("Nothing changed");
          location.hash = `#/job/${encodeURIComponent(form.job.uuid)}`;
          return;
        }
        job = await api("PATCH", `/jobs/${encodeURIComponent(form.job.uuid)}`, body);
        toast(`Saved ${job.name}`);
      } else {
        job = await api("POST", "/jobs", body);
        toast(`Created ${job.name}`);
      }
      location.hash = `#/job/${encodeURIComponent(job.uuid)}`;
    } catch (error) {
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      placeFieldErrors(error.fields);
      showFormError(error.message);
    } finally {
      button.disabled = false;
    }
  }

  function schedulePreview(delay) {
    clearTimeout(form.previewTimer);
    form.previewTimer = setTimeout(runPreview, delay);
  }

  // The next runs of the spec and zone as typed, from POST /schedule/preview
  // (which stores nothing); a problem with either shows beside it.
  async function runPreview() {
    const box = document.getElementById("preview");
    const specInput = document.getElementById("field-spec");
    if (!box || !specInput) return;
    const zoneInput = document.getElementById("field-timezone");
    const timezone = zoneInput ? zoneInput.value.trim() : "";
    const token = (form.previewSeq += 1);
    const spec = specInput.value;
    if (!spec.trim()) {
      clearFieldError("spec");
      clearFieldError("timezone");
      box.dataset.state = "empty";
      box.replaceChildren(el("p", { class: "muted small", text: "Type a schedule to see its next runs." }));
      return;
    }
    const body = { spec, n: PREVIEW_SLOTS };
    if (timezone) body.timezone = timezone;
    try {
      const answer = await api("POST", "/schedule/preview", body);
      if (token !== form.previewSeq) return;
      clearFieldError("spec");
      clearFieldError("timezone");
      box.dataset.state = "ok";
      box.dataset.count = String(answer.items.length);
      box.replaceChildren(
        el("p", { class: "preview-head", text: `Next runs (${answer.timezone})` }),
        answer.items.length
          ? el("ol", {}, answer.items.map((item) => el("li", { title: item.utc, dataset: { utc: item.utc } }, el("span", { class: "mono", text: item.local }), el("span", { class: "muted", text: ` ${relative(item.utc)}` }))))
          : el("p", { class: "muted small", text: "This schedule fires no more." }),
      );
    } catch (error) {
      if (token !== form.previewSeq) return;
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      clearFieldError("spec");
      clearFieldError("timezone");
      box.dataset.state = "error";
      box.dataset.count = "0";
      box.replaceChildren(el("p", { class: "muted small", text: "No next runs to show." }));
      if (!placeFieldErrors(error.fields)) placeFieldErrors({ spec: error.message });
    }
  }

  // -- deleting a job ----------------------------------------------------------

  function askDelete() {
    const job = view.job;
    if (!job) return;
    $("#delete-confirm-text").textContent = `Delete the job “${job.name}”? It stops firing, and this cannot be undone.`;
    $("#delete-confirm-yes").dataset.jobUuid = job.uuid;
    show($("#delete-confirm"), true);
    $("#delete-confirm-no").focus();
  }

  async function deleteJob(button) {
    const job = view.job;
    if (!job || button.dataset.jobUuid !== job.uuid) return;
    button.disabled = true;
    try {
      await api("DELETE", `/jobs/${encodeURIComponent(job.uuid)}`);
      show($("#delete-confirm"), false);
      toast(`Deleted ${job.name}`);
      $("#toast").dataset.deleted = job.uuid;
      location.hash = `#/?project=${encodeURIComponent(job.project_uuid)}`;
    } catch (error) {
      if (error.status === 401) {
        signOut(error.message);
        return;
      }
      toast(`Failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // -- start ----------------------------------------------------------------

  // An instant typed in a datetime-local box (this browser's zone) in RFC 3339.
  function typedInstant(value) {
    const ms = value ? Date.parse(value) : NaN;
    return Number.isNaN(ms) ? null : new Date(ms).toISOString();
  }

  function wireFilters() {
    let typing = null;
    $("#jobs-filters").addEventListener("submit", (event) => event.preventDefault());
    $("#jobs-search").addEventListener("input", (event) => {
      const value = event.currentTarget.value;
      clearTimeout(typing);
      typing = setTimeout(() => setParams({ q: value, ...firstPage("") }, { replace: true }), TYPING_MS);
    });
    $("#jobs-state").addEventListener("change", (event) => setParams({ state: event.currentTarget.value, ...firstPage("") }));
    let selecting = null;
    const select = (replace) => {
      clearTimeout(selecting);
      setParams({ selector: $("#jobs-selector").value.trim(), ...firstPage("") }, { replace });
    };
    $("#jobs-selector").addEventListener("input", () => {
      clearTimeout(selecting);
      selecting = setTimeout(() => select(true), TYPING_MS);
    });
    $("#jobs-selector").addEventListener("keydown", (event) => {
      if (event.key === "Enter") select(false);
    });
    for (const button of document.querySelectorAll("#jobs-bulk [data-bulk]")) {
      button.addEventListener("click", (event) => askBulk(event.currentTarget.dataset.bulk, event.currentTarget));
    }
    $("#bulk-confirm-typed").addEventListener("input", (event) => {
      $("#bulk-confirm-yes").disabled = event.currentTarget.value.trim() !== String(bulk.count);
    });
    $("#bulk-confirm-yes").addEventListener("click", (event) => runBulk(event.currentTarget));
    $("#bulk-confirm-no").addEventListener("click", () => {
      bulk.action = null;
      show($("#bulk-confirm"), false);
    });
    $("#jobs-project").addEventListener("change", (event) => setParams({ project: event.currentTarget.value, ...firstPage("") }));
    $("#exec-filters").addEventListener("submit", (event) => event.preventDefault());
    $("#exec-state").replaceChildren(el("option", { value: "", text: "Any" }), ...STATES.map((state) => el("option", { value: state, text: state })));
    $("#exec-state").addEventListener("change", (event) => setParams({ estate: event.currentTarget.value, ...firstPage("e") }));
    for (const [id, key] of [["#exec-since", "since"], ["#exec-until", "until"]]) {
      $(id).addEventListener("change", (event) => setParams({ [key]: typedInstant(event.currentTarget.value), ...firstPage("e") }));
    }
    $("#exec-clear").addEventListener("click", () => setParams({ estate: null, since: null, until: null, ...firstPage("e") }));
    $("#job-form").addEventListener("submit", submitForm);
    $("#job-delete").addEventListener("click", askDelete);
    $("#delete-confirm-yes").addEventListener("click", (event) => deleteJob(event.currentTarget));
    $("#delete-confirm-no").addEventListener("click", () => show($("#delete-confirm"), false));
  }

  function start() {
    legend($("#chart-legend"), true, OUTCOMES);
    wireFilters();
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
