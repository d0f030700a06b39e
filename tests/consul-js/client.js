// node-consul (npm "consul"), unchanged, against dnsdisc's Consul-compatible API.
// Usage: node client.js HTTP_PORT TOKEN. Prints one JSON line per step; the checks are made by
// tests/integration/test_consul.py, which also looks at the same registry over DNS.
"use strict";
const Consul = require("consul");

const [port, token] = process.argv.slice(2);
const consul = new Consul({ host: "127.0.0.1", port: Number(port), defaults: { token } });
const log = (step, data) => console.log(JSON.stringify({ step, ...data }));

// Every wait is bounded: a watcher that never wakes fails the step instead of hanging.
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function main() {
  const self = await consul.agent.self();
  log("self", { dc: self.Config.Datacenter, node: self.Config.NodeName });

  await consul.agent.service.register({
    name: "shop", id: "shop-1", address: "127.0.0.1", port: 8081, tags: ["v2"],
    meta: { team: "cart" }, check: { ttl: "30s" },
  });
  const before = await consul.health.service({ service: "shop", passing: true });
  log("registered", { passing: before.length });

  // A watcher of the passing instances: node-consul's blocking-query loop (X-Consul-Index).
  const watch = consul.watch({
    method: consul.health.service, options: { service: "shop", passing: true, wait: "10s" },
  });
  const change = () => new Promise((resolve, reject) => {
    watch.once("change", resolve);
    watch.once("error", reject);
  });
  let next = change();
  let data = await within(next, 5000, "first read");
  log("watch-first", { ids: data.map((e) => e.Service.ID) });

  next = change();
  let t0 = Date.now();
  await consul.agent.check.pass({ id: "service:shop-1", note: "ready" });
  data = await within(next, 5000, "wake on pass");
  log("watch-pass", {
    ids: data.map((e) => e.Service.ID), ms: Date.now() - t0,
    port: data[0].Service.Port, meta: data[0].Service.Meta,
  });

  next = change();
  t0 = Date.now();
  await consul.agent.check.warn({ id: "service:shop-1" });
  data = await within(next, 5000, "wake on warn");
  log("watch-warn", { ids: data.map((e) => e.Service.ID), ms: Date.now() - t0 });
  watch.end();

  const all = await consul.health.service("shop");
  log("warn", { checks: all[0].Checks.map((c) => c.Status) });

  await consul.agent.service.maintenance({ id: "shop-1", enable: true, reason: "upgrade" });
  const maint = await consul.health.service("shop");
  log("maintenance", { checks: maint[0].Checks.map((c) => [c.CheckID, c.Status, c.Notes]) });
  await consul.agent.service.maintenance({ id: "shop-1", enable: false });
  await consul.agent.check.pass({ id: "service:shop-1" });

  const catalog = await consul.catalog.service.list();
  log("catalog", { services: catalog });

  try {
    await consul.agent.service.register({ name: "bad_name", id: "x", port: 1 });
    log("bad", { status: 200 });
  } catch (err) {
    log("bad", { status: err.response && err.response.statusCode, body: err.response && err.response.body });
  }

  await consul.agent.service.deregister("shop-1");
  log("deregistered", { services: await consul.catalog.service.list() });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
