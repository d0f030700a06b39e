// The dnsdisc dashboard: polls the JSON API and draws services, instances, health and the
// answer shares. Plain DOM, no build step; every value from the API goes in as text.
"use strict";

const API = "../v1/services";
const POLL_MS = 2000;
const TIMEOUT_MS = 5000;
const WINDOW_MS = 60000; // answer shares over the last minute while answers arrive
const HEALTHY = new Set(["passing", "warning"]);
// A token typed into the page: the API is read with its rights, as with any client. Kept for
// this tab only (sessionStorage), sent only to this server.
const TOKEN_KEY = "dnsdisc.token";

// Past answer counts: [{t, counts: Map("service/id" -> answers)}], oldest first.
const snapshots = [];
let lastOk = null;

class HttpError extends Error {
  constructor(url, status) {
    super(`${url}: HTTP ${status}`);
    this.status = status;
  }
}

async function getJSON(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(url, { signal: ctl.signal, cache: "no-store", headers });
    if (!resp.ok) throw new HttpError(url, resp.status);
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
}

// One request per refresh, however many services: the bulk form of the list carries every
// service's instances and their answer counts.
async function load() {
  const list = await getJSON(`${API}?stats=1`);
  return list.services;
}

// -- small DOM helpers ----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key === "title" || key === "aria-label") {
      node.setAttribute(key, String(value));
    } else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function width(x) {
  return `${(Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0) * 100}%`;
}

function pct(x) {
  if (!Number.isFinite(x)) return "–";
  return `${(x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`;
}

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function localTime(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

// -- answer shares --------------------------------------------------------------------------

function remember(services) {
  const now = performance.now();
  const counts = new Map();
  for (const svc of services) {
    for (const inst of svc.instances) counts.set(`${svc.name}/${inst.id}`, inst.answers ?? 0);
  }
  const last = snapshots[snapshots.length - 1];
  if (last && [...counts].some(([key, n]) => n < (last.counts.get(key) ?? 0))) {
    snapshots.length = 0; // the server restarted (or an instance was re-created): start over
  }
  snapshots.push({ t: now, counts });
  while (snapshots.length > 1 && now - snapshots[1].t >= WINDOW_MS) snapshots.shift();
  return snapshots[0];
}

// {key -> share} of one service, and how it was measured.
function answerShares(svc, base) {
  const totals = svc.instances.map((i) => i.answers ?? 0);
  const recent = svc.instances.map(
    (i, n) => totals[n] - (base.counts.get(`${svc.name}/${i.id}`) ?? 0),
  );
  const recentSum = recent.reduce((a, b) => a + b, 0);
  const totalSum = totals.reduce((a, b) => a + b, 0);
  if (recentSum > 0) {
    const secs = Math.max(1, Math.round((performance.now() - base.t) / 1000));
    return { values: recent, sum: recentSum, label: `over the last ${secs} s` };
  }
  return { values: totals, sum: totalSum, label: "since the server started" };
}

function weightShares(svc) {
  const inAnswers = svc.instances.map((i) => HEALTHY.has(i.health.status));
  const active = svc.instances.map((i, n) => inAnswers[n] && i.weight > 0);
  // Drained instances (weight 0) are handed out only when no active one is left.
  const pool = active.some(Boolean) ? active : inAnswers;
  const drained = pool === inAnswers;
  const weights = svc.instances.map((i, n) => (pool[n] ? (drained ? 1 : i.weight) : 0));
  const sum = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => (sum > 0 ? w / sum : 0));
}

// -- drawing --------------------------------------------------------------------------------

function badge(status) {
  return el("span", { class: `badge s-${status}`, "data-status": status, text: status });
}

function timeline(history) {
  const items = history.map((h) =>
    el("li", { class: `s-${h.status}`, title: `${localTime(h.time)}: ${h.status}` }),
  );
  const label = history.length
    ? `${history.length} change${history.length === 1 ? "" : "s"}`
    : "no changes";
  return el("ol", { class: "timeline", "aria-label": "status history" }, items, el("li", { class: "label", text: label }));
}

function bars(answerShare, weightShare, answers, expectedShare) {
  const answerBar = el("span");
  answerBar.style.width = width(answerShare);
  const weightBar = el("span");
  weightBar.style.width = width(weightShare);
  const expected = [];
  if (expectedShare !== null && expectedShare !== undefined) {
    const expectedBar = el("span");
    expectedBar.style.width = width(expectedShare);
    expected.push(
      el("span", { class: "k", text: "expected" }),
      el("div", { class: "bar weight", title: "chance of leading the next answer (explain)" }, expectedBar),
      el("span", { class: "v", "data-share": "expected", text: pct(expectedShare) }),
    );
  }
  return el(
    "div",
    { class: "bars" },
    el("span", { class: "k", text: "answers" }),
    el("div", { class: "bar answers", title: `${answers} answers led by this instance` }, answerBar),
    el("span", { class: "v", "data-share": "answers", text: pct(answerShare) }),
    ...expected,
    el("span", { class: "k", text: "weight" }),
    el("div", { class: "bar weight" }, weightBar),
    el("span", { class: "v", "data-share": "weight", text: pct(weightShare) }),
  );
}

function instanceRow(svc, inst, answerShare, weightShare) {
  const h = inst.health;
  const status = h.status;
  const last = h.history.length ? h.history[h.history.length - 1].time : h.since;
  const out = [];
  if (h.maintenance !== null) out.push(el("div", { class: "reason", text: `Maintenance: ${h.maintenance}` }));
  if (h.output) out.push(el("div", { class: "out", title: h.output, text: h.output }));
  if (status === "maintenance") out.push(el("div", { class: "sub", text: `check status: ${h.check_status}` }));
  // Several checks: each one's latest run, the instance being as healthy as the worst.
  if ((h.checks ?? []).length > 1) {
    for (const c of h.checks) {
      const took = c.latency_ms === null ? "" : ` (${c.latency_ms.toFixed(1)} ms)`;
      out.push(
        el("div", {
          class: "check",
          "data-check": c.id,
          "data-status": c.status ?? "pending",
          title: c.output,
          text: `${c.id}: ${c.status ?? "not run yet"}${took}`,
        }),
      );
    }
  }
  if (!out.length) out.push(el("span", { class: "none", text: inst.check ? "no output yet" : "no check" }));
  const latency = [
    inst.latency_ms === null ? el("span", { class: "none", text: "–" }) : `${inst.latency_ms.toFixed(1)} ms`,
  ];
  if (inst.load !== null) latency.push(el("div", { class: "sub", text: `load ${inst.load}` }));
  const addr = inst.address.includes(":") ? `[${inst.address}]:${inst.port}` : `${inst.address}:${inst.port}`;
  return el(
    "tr",
    { "data-instance": inst.id, "data-status": status, class: HEALTHY.has(status) ? "" : "down" },
    el(
      "td",
      { class: "c-id" },
      el("div", { class: "id", text: inst.id }),
      inst.tags.length || inst.static || inst.zone
        ? el(
            "div",
            { class: "tags" },
            inst.zone ? el("span", { class: "tag", text: `in ${inst.zone}` }) : null,
            inst.tags.map((t) => el("span", { class: "tag", text: t })),
            inst.static ? el("span", { class: "tag", text: "zone file" }) : null,
          )
        : null,
    ),
    el("td", { class: "c-addr" }, el("div", { class: "mono", text: addr }), el("div", { class: "sub", text: inst.protocol })),
    el("td", { class: "c-num", text: String(inst.weight) }),
    el("td", { class: "c-num", text: String(inst.priority) }),
    el(
      "td",
      { class: "c-health" },
      badge(status),
      el("span", { class: "since", title: `since ${localTime(last)}`, text: ago(last) }),
      timeline(h.history),
    ),
    el("td", { class: "c-out" }, out),
    el("td", { class: "c-lat" }, latency),
    el("td", { class: "c-share" }, bars(answerShare, weightShare, inst.answers ?? 0, inst.expected)),
  );
}

function healthMeter(svc) {
  const counts = { passing: 0, warning: 0, critical: 0, maintenance: 0 };
  for (const i of svc.instances) counts[i.health.status] = (counts[i.health.status] ?? 0) + 1;
  const total = svc.instances.length || 1;
  const segs = Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([status, n]) => {
      const seg = el("span", { class: `seg s-${status}`, title: `${n} ${status}` });
      seg.style.width = `${(n / total) * 100}%`;
      seg.style.background = `var(--${status})`;
      return seg;
    });
  return el("div", { class: "meter" }, el("div", { class: "track" }, segs), `${svc.healthy_count} of ${svc.instance_count} healthy`);
}

function serviceCard(svc, base) {
  const shares = answerShares(svc, base);
  const weights = weightShares(svc);
  const fact = (k, v) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }));
  const extras = [];
  if (svc.static) extras.push(el("span", { class: "pill plain", text: "zone file" }));
  if (svc.slow_start) extras.push(el("span", { class: "pill plain", text: `slow start ${svc.slow_start} s` }));
  if (svc.panic_threshold !== null) extras.push(el("span", { class: "pill plain", text: `fail-open < ${pct(svc.panic_threshold)}` }));
  const rows = svc.instances.map((inst, n) =>
    instanceRow(svc, inst, shares.sum ? shares.values[n] / shares.sum : 0, weights[n]),
  );
  const table = svc.instances.length
    ? el(
        "table",
        {},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Instance", "Address", "Weight", "Prio", "Health", "Check output", "Latency", "Answer vs weight share"].map(
              (title, n) => el("th", { class: ["c-id", "c-addr", "c-num", "c-num", "c-health", "c-out", "c-lat", "c-share"][n], text: title }),
            ),
          ),
        ),
        el("tbody", {}, rows),
      )
    : el("p", { class: "empty", text: "No instances registered." });
  return el(
    "section",
    { class: "service", "data-service": svc.name },
    el(
      "div",
      { class: "svc-head" },
      el("h2", { text: svc.name }),
      el("span", { class: "pill", title: "balancing policy", text: svc.policy }),
      extras,
      el(
        "dl",
        { class: "facts" },
        fact("max answers", svc.max_answers === null ? "all" : String(svc.max_answers)),
        fact("TTL", `${svc.ttl} s`),
        fact("instances", String(svc.instance_count)),
        fact("healthy", String(svc.healthy_count)),
      ),
      healthMeter(svc),
    ),
    table,
    el(
      "div",
      { class: "svc-foot" },
      `Answer shares ${shares.label}: ${shares.sum.toLocaleString()} A/AAAA answer${shares.sum === 1 ? "" : "s"} for ${svc.name}.`,
    ),
  );
}

function drawTotals(services) {
  const all = services.flatMap((s) => s.instances);
  const count = (status) => all.filter((i) => i.health.status === status).length;
  const item = (cls, n, label) => el("li", { class: cls }, el("b", { text: String(n) }), ` ${label}`);
  document.getElementById("totals").replaceChildren(
    item("", services.length, services.length === 1 ? "service" : "services"),
    item("", all.length, all.length === 1 ? "instance" : "instances"),
    item("t-healthy", all.filter((i) => HEALTHY.has(i.health.status)).length, "healthy"),
    item("t-critical", count("critical"), "critical"),
    item("t-maintenance", count("maintenance"), "in maintenance"),
  );
}

function draw(services) {
  const base = remember(services);
  drawTotals(services);
  const main = document.getElementById("services");
  if (!services.length) {
    main.replaceChildren(
      el(
        "p",
        { class: "empty" },
        "No services registered yet. Register one with ",
        el("code", { text: "PUT /v1/services/{service}/instances/{id}" }),
        ".",
      ),
    );
    return;
  }
  main.replaceChildren(...services.map((svc) => serviceCard(svc, base)));
}

function setConn(state, text) {
  const conn = document.getElementById("conn");
  conn.dataset.state = state;
  document.getElementById("conn-text").textContent = text;
}

async function poll() {
  try {
    const services = await load();
    draw(services);
    lastOk = new Date();
    setConn("live", `live · updated ${lastOk.toLocaleTimeString()}`);
    document.querySelector(".banner")?.remove();
  } catch (err) {
    const when = lastOk ? `last update ${lastOk.toLocaleTimeString()}` : "no data yet";
    setConn("error", `API unreachable · ${when}`);
    if (!document.querySelector(".banner")) {
      document.getElementById("services").prepend(
        el("div", { class: "banner", role: "alert", text: `Cannot read the API (${err.message || err}); retrying every 2 s.` }),
      );
    }
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.getElementById("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("auth-token");
  if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
  else sessionStorage.removeItem(TOKEN_KEY);
  input.value = "";
  input.placeholder = sessionStorage.getItem(TOKEN_KEY) ? "token set (empty: none)" : "API token";
});

poll();
