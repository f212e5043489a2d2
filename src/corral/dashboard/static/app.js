// corral dashboard: vanilla JS, no build step. Talks to the launcher's control API under /api.
// Cards are created once and patched in place (50+ services stay cheap); state changes arrive
// by SSE (/api/events), cpu/rss by one GET /api/services every 2 s (with GET /api/gpus when the
// machine has GPUs, in the same refresh).
"use strict";
(() => {
  const TOKEN_KEY = "corral.token";
  const REFRESH_MS = 2000;
  const ROUTER_MS = 2000;
  const SPARK_N = 60;
  const GPU_IDLE_EVERY = 15; // refreshes between /api/gpus checks while no GPU is known (30 s)
  const LOG_MAX = 2000;
  const $ = (sel, root = document) => root.querySelector(sel);

  // ---------- auth: token asked once per tab, sent as a header (no cookie, so no CSRF) ----------
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let asking = null;

  function askToken(refused) {
    if (asking) return asking;
    asking = new Promise((resolve) => {
      const dlg = $("#token-dialog");
      $("#token-error").hidden = !refused;
      $("#token-input").value = "";
      dlg.addEventListener("close", () => {
        const t = $("#token-input").value.trim();
        if (t) {
          token = t;
          sessionStorage.setItem(TOKEN_KEY, t);
        }
        asking = null;
        resolve(t);
      }, { once: true });
      dlg.showModal();
    });
    return asking;
  }

  async function api(method, path, opts = {}) {
    for (let refused = Boolean(token); ; refused = true) {
      const headers = { ...(opts.headers || {}) };
      if (token) headers.Authorization = "Bearer " + token;
      const sent = token;
      const r = await fetch(path, { method, headers, signal: opts.signal, cache: "no-store" });
      if (r.status !== 401) return r;
      if (r.body) r.body.cancel().catch(() => {});
      // Another request may have got a fresh token while this one was in flight.
      if (token && token !== sent) continue;
      if (!(await askToken(refused))) throw new Error("a control token is needed");
    }
  }

  async function errorText(r) {
    try {
      const j = await r.json();
      return (j.error && j.error.message) || j.detail || JSON.stringify(j);
    } catch {
      return r.status + " " + r.statusText;
    }
  }

  async function getJSON(path, signal) {
    const r = await api("GET", path, { signal });
    if (!r.ok) {
      const e = new Error(await errorText(r));
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  let toastTimer = 0;
  function toast(msg) {
    const t = $("#toast");
    t.textContent = msg;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  // ---------- SSE over fetch (EventSource cannot send an Authorization header) ----------
  async function readSSE(path, onData, signal, onOpen) {
    const r = await api("GET", path, { headers: { Accept: "text/event-stream" }, signal });
    if (!r.ok) throw new Error(path + ": " + (await errorText(r)));
    if (onOpen) onOpen();
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let data = [];
    let event = "message";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      const lines = buf.split("\n");
      buf = lines.pop();
      for (let line of lines) {
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) onData(data.join("\n"), event);
          data = [];
          event = "message";
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        } else if (line.startsWith("event:")) {
          event = line.slice(6).trim();
        }
      }
    }
  }

  // Follows an SSE path until aborted, reconnecting with backoff; returns the AbortController.
  function follow(path, onData, hooks = {}) {
    const ctl = new AbortController();
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted) {
        try {
          await readSSE(path, onData, ctl.signal, () => {
            delay = 500;
            if (hooks.open) hooks.open();
          });
        } catch (e) {
          if (ctl.signal.aborted) return;
          if (hooks.error) hooks.error(e);
        }
        if (ctl.signal.aborted) return;
        if (hooks.down) hooks.down();
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
    return ctl;
  }

  function parseJSON(s) {
    try { return JSON.parse(s); } catch { return null; }
  }

  // ---------- formatting ----------
  function fmtDuration(s) {
    if (s == null || !isFinite(s)) return "–";
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function fmtBytes(b) {
    if (b == null) return "–";
    if (b < 1024 * 1024) return (b / 1024).toFixed(0) + " KB";
    if (b < 1024 ** 3) return (b / 1024 ** 2).toFixed(1) + " MB";
    return (b / 1024 ** 3).toFixed(2) + " GB";
  }
  function fmtNum(v, digits = 1) {
    if (v == null || !isFinite(v)) return "–";
    return v >= 100 ? v.toFixed(0) : v.toFixed(digits);
  }
  function fmtGiB(b) {
    return b == null ? "–" : (b / 1024 ** 3).toFixed(1) + " GiB";
  }

  // "GPU 0 · 4.0 GiB · CUDA_VISIBLE_DEVICES=0": the GPUs placement gave the service (what its
  // CUDA_VISIBLE_DEVICES names) and the GPU memory its process tree holds now.
  function gpuLine(s) {
    const placed = (Array.isArray(s.gpus) ? s.gpus : []).filter((g) => g != null && typeof g !== "object");
    const usage = s.gpu_usage || {};
    const ids = [...placed.map(String)];
    for (const k of Object.keys(usage)) if (!ids.includes(k)) ids.push(k);
    if (!ids.length) return "";
    const parts = [(ids.length > 1 ? "GPUs " : "GPU ") + ids.join(",")];
    const held = Object.entries(usage).filter(([, b]) => b > 0);
    if (s.gpu_memory_bytes) {
      let mem = fmtGiB(s.gpu_memory_bytes);
      if (held.length > 1) mem += " (" + held.map(([k, b]) => k + ": " + fmtGiB(b)).join(", ") + ")";
      parts.push(mem);
    }
    if (placed.length) parts.push("CUDA_VISIBLE_DEVICES=" + placed.join(","));
    return parts.join(" · ");
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // Polyline points for the last `slots` values, right-aligned in a w×h box, nulls skipped.
  // The scale runs from 0 (or from the smallest value when `fromMin`) to max(values, floor).
  function points(values, w, h, { floor = 0, fromMin = false, slots = values.length } = {}) {
    let max = floor;
    let min = Infinity;
    for (const v of values) {
      if (v == null) continue;
      if (v > max) max = v;
      if (v < min) min = v;
    }
    if (min === Infinity) return "";
    const lo = fromMin ? min - (max - min) * 0.25 : 0;
    const span = max - lo || 1;
    const step = w / Math.max(slots - 1, 1);
    const offset = slots - values.length;
    const out = [];
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v == null) continue;
      const y = fromMin && max === min ? h / 2 : h - ((v - lo) / span) * (h - 1) - 0.5;
      out.push(((offset + i) * step).toFixed(1) + "," + y.toFixed(1));
    }
    return out.join(" ");
  }

  // ---------- service cards ----------
  const cards = new Map(); // name -> card record
  const template = $("#card-template");
  const STARTABLE = new Set(["stopped", "failed", "unhealthy"]);
  const EVENT_FIELDS = ["state", "pid", "reason", "restarts", "last_exit", "uptime_s", "tail"];

  function sectionOf(svc) {
    if (svc.kind === "registry" || svc.kind === "router") return "control";
    if (svc.kind === "sitter" || svc.kind === "backend") return "backends";
    return "other";
  }

  function groupBox(section, group) {
    const sec = $("#kind-" + section);
    sec.hidden = false;
    const holder = $(".groups", sec);
    for (const g of holder.children) if (g.dataset.group === group) return $(".cards", g);
    const box = document.createElement("div");
    box.className = "group";
    box.dataset.group = group;
    const head = document.createElement("header");
    const h = document.createElement("h3");
    h.textContent = group;
    head.append(h);
    for (const action of ["start", "stop", "restart"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.action = action;
      b.dataset.scope = "group";
      b.dataset.group = group;
      b.textContent = action[0].toUpperCase() + action.slice(1) + " group";
      head.append(b);
    }
    if (section === "backends") {
      // Replica by replica, each drained first: requests in flight finish, none fails.
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.action = "rolling";
      b.dataset.scope = "group";
      b.dataset.group = group;
      b.textContent = "Rolling restart";
      b.title = "Restart one replica at a time, each drained first";
      head.append(b);
    }
    const list = document.createElement("div");
    list.className = "cards";
    box.append(head, list);
    holder.append(box);
    return list;
  }

  function createCard(svc) {
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.service = svc.name;
    el.id = "svc-" + svc.name;
    const q = (s) => $(s, el);
    const rec = {
      el, svc: {}, cpu: [], rss: [], logKey: null, portsKey: null, eventAt: 0,
      f: {
        name: q(".name"), state: q(".state"), pid: q(".pid"), uptime: q(".uptime"),
        restarts: q(".restarts"), ports: q(".ports"), cpu: q(".cpu"), rss: q(".rss"),
        cpuLine: q(".spark-cpu polyline"), rssLine: q(".spark-rss polyline"),
        models: q(".models"), gpus: q(".gpus"), failure: q(".failure"), reason: q(".reason"),
        lastlog: q(".lastlog"), start: q('[data-action="start"]'), stop: q('[data-action="stop"]'),
      },
    };
    rec.f.name.textContent = svc.name;
    rec.f.name.title = svc.name;
    const group = svc.group || svc.kind || "services";
    const list = groupBox(sectionOf(svc), group);
    list.append(el);
    const box = list.parentElement;
    box.classList.toggle("solo", list.childElementCount === 1 && svc.name === group);
    cards.set(svc.name, rec);
    return rec;
  }

  // ports is {"http": 8100, "sitter": 8101} (or a plain list); the port in the url gets the link.
  function renderPorts(rec) {
    const s = rec.svc;
    const raw = s.ports || [];
    const entries = Array.isArray(raw) ? raw.map((p) => [null, p]) : Object.entries(raw);
    const key = JSON.stringify(entries) + "|" + (s.url || "");
    if (key === rec.portsKey) return;
    rec.portsKey = key;
    const dd = rec.f.ports;
    dd.textContent = "";
    if (!entries.length) {
      if (s.url) dd.append(link(s.url, "open"));
      else dd.textContent = "–";
      return;
    }
    const m = s.url && s.url.match(/:(\d+)/);
    entries.forEach(([label, p], i) => {
      if (i) dd.append(", ");
      const text = label && entries.length > 1 ? `${label} ${p}` : String(p);
      if (m && Number(m[1]) === Number(p)) dd.append(link(s.url, text));
      else dd.append(text);
    });
    dd.title = dd.textContent;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    a.target = "_blank";
    a.rel = "noopener";
    return a;
  }

  // Patches one card from a (partial) service record; only touches what changed.
  function patchCard(rec, patch) {
    const s = Object.assign(rec.svc, patch);
    delete s.tail;
    const f = rec.f;
    const state = s.state || "stopped";
    if (rec.el.dataset.state !== state) rec.el.dataset.state = state;
    setText(f.state, state);
    setText(f.pid, s.pid ? String(s.pid) : "–");
    setText(f.uptime, s.pid && s.uptime_s != null ? fmtDuration(s.uptime_s) : "–");
    setText(f.restarts, String(s.restarts || 0));
    renderPorts(rec);
    const models = s.models || [];
    f.models.hidden = !models.length;
    if (models.length) setText(f.models, "models: " + models.join(", "));
    const gpuText = gpuLine(s);
    f.gpus.hidden = !gpuText;
    if (gpuText) setText(f.gpus, gpuText);
    f.start.disabled = !STARTABLE.has(state);
    f.stop.disabled = state === "stopped";

    const bad = state === "failed" || state === "unhealthy";
    f.failure.hidden = !(bad && (s.reason || state === "failed"));
    if (!f.failure.hidden) {
      setText(f.reason, s.reason || state);
      if (state === "failed" && Array.isArray(patch.tail)) {
        rec.logKey = "view";
        setText(f.lastlog, patch.tail.slice(-12).join("\n"));
      } else if (state === "failed") {
        // Last log lines once per failure (the key changes when it fails again).
        const key = [s.pid, s.restarts, s.last_exit, s.reason].join("|");
        if (rec.logKey !== key && rec.logKey !== "view") {
          rec.logKey = key;
          tailLines(s.name, 12).then((lines) => setText(f.lastlog, lines.join("\n"))).catch(() => {});
        }
      }
    } else if (rec.logKey !== null) {
      rec.logKey = null;
      setText(f.lastlog, "");
    }
  }

  function pushSample(rec, s) {
    const alive = Boolean(rec.svc.pid);
    rec.cpu.push(alive ? s.cpu_percent ?? null : null);
    rec.rss.push(alive ? s.rss_bytes ?? null : null);
    if (rec.cpu.length > SPARK_N) rec.cpu.shift();
    if (rec.rss.length > SPARK_N) rec.rss.shift();
    const f = rec.f;
    setText(f.cpu, alive && s.cpu_percent != null ? "cpu " + fmtNum(s.cpu_percent) + "%" : "cpu –");
    setText(f.rss, alive && s.rss_bytes != null ? "rss " + fmtBytes(s.rss_bytes) : "rss –");
    f.cpuLine.setAttribute("points", points(rec.cpu, 60, 16, { floor: 5, slots: Math.max(rec.cpu.length, 15) }));
    f.rssLine.setAttribute("points", points(rec.rss, 60, 16, { fromMin: true, slots: Math.max(rec.rss.length, 15) }));
  }

  function renderSummary() {
    const counts = {};
    for (const rec of cards.values()) {
      const st = rec.svc.state || "stopped";
      counts[st] = (counts[st] || 0) + 1;
    }
    const parts = [cards.size + " services"];
    for (const st of ["healthy", "starting", "restarting", "stopping", "unhealthy", "failed", "stopped"]) {
      if (counts[st]) parts.push(counts[st] + " " + st);
    }
    setText($("#summary"), parts.join(" · "));
  }

  // One refresh at a time; a call while one is in flight waits for that one.
  let refreshing = null;
  function refresh() {
    if (!refreshing) refreshing = doRefresh().finally(() => { refreshing = null; });
    return refreshing;
  }

  async function doRefresh() {
    const asked = performance.now();
    const gpusAsked = gpuDue() ? getJSON("/api/gpus").then(
      (body) => ({ body }), (error) => ({ error })) : null;
    try {
      const body = await getJSON("/api/services");
      const list = Array.isArray(body) ? body : body.services || [];
      const seen = new Set();
      for (const svc of list) {
        seen.add(svc.name);
        const rec = cards.get(svc.name) || createCard(svc);
        if (rec.eventAt > asked) {
          // An event arrived while this answer was on its way: its state is newer.
          for (const k of EVENT_FIELDS) delete svc[k];
        }
        patchCard(rec, svc);
        pushSample(rec, svc);
        if (svc.gpu_memory_bytes || (svc.gpus && svc.gpus.length)) gpus.known = true;
      }
      for (const [name, rec] of cards) {
        if (!seen.has(name)) {
          rec.el.remove();
          cards.delete(name);
        }
      }
      renderSummary();
    } catch (e) {
      if (e.status) toast("services: " + e.message);
    }
    if (gpusAsked) {
      const { body, error } = await gpusAsked;
      if (body) renderGpus(body);
      else if (error && error.status === 404) renderGpus({ gpus: [] });
    }
  }

  // ---------- GPUs (GET /api/gpus, fetched with the services refresh) ----------
  // Every refresh while the machine has GPUs (or a service was given some); else now and then.
  const gpus = { known: false, idle: 0, key: "" };
  function gpuDue() {
    if (gpus.known) return true;
    if (gpus.idle > 0) {
      gpus.idle--;
      return false;
    }
    gpus.idle = GPU_IDLE_EVERY;
    return true;
  }

  function node(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function renderGpus(body) {
    const list = (body && Array.isArray(body.gpus)) ? body.gpus : [];
    const placed = (body && body.placed) || {};
    gpus.known = list.length > 0 || Object.keys(placed).length > 0;
    const key = JSON.stringify([list, placed, body && body.message]);
    if (key === gpus.key) return;
    gpus.key = key;
    const panel = $("#gpus");
    panel.hidden = !list.length;
    // "nvml", or "file:/path" for an inventory file: the kind is shown, the path on hover.
    const src = (list.length && body.source) || "";
    setText($("#gpu-source"), src ? "(" + (src.startsWith("file") ? "inventory file" : src) + ")" : "");
    $("#gpu-source").title = src;
    const frag = document.createDocumentFragment();
    for (const g of list) frag.append(gpuBox(g, placed));
    $("#gpu-list").replaceChildren(frag);
  }

  function gpuBox(g, placed) {
    const box = node("div", "gpu");
    box.dataset.gpu = String(g.index);
    const head = node("div", "gpu-head");
    head.append(node("b", null, "GPU " + g.index), node("span", "gpu-name", g.name || ""));
    head.append(node("span", "gpu-util",
      g.utilization_percent == null ? "util –" : "util " + fmtNum(g.utilization_percent, 0) + "%"));
    box.append(head);

    // The memory bar: a segment per holder (services and foreign processes coloured apart),
    // then memory in use that no listed process accounts for.
    const total = g.memory_total || 0;
    const bar = node("div", "membar");
    const holders = g.holders || [];
    let listed = 0;
    for (const h of holders) {
      listed += h.used_memory || 0;
      if (!total || !h.used_memory) continue;
      const seg = node("span", h.service ? "seg svc" : "seg foreign");
      seg.style.width = Math.min(100, (100 * h.used_memory) / total).toFixed(2) + "%";
      seg.title = (h.service || "PID " + h.pid) + ": " + fmtGiB(h.used_memory);
      bar.append(seg);
    }
    const rest = (g.memory_used || 0) - listed;
    if (total && rest > 0) {
      const seg = node("span", "seg other");
      seg.style.width = Math.min(100, (100 * rest) / total).toFixed(2) + "%";
      seg.title = "not attributed: " + fmtGiB(rest);
      bar.append(seg);
    }
    box.append(bar);
    box.append(node("div", "gpu-mem", total
      ? `${fmtGiB(g.memory_used)} / ${fmtGiB(total)} used · ${fmtGiB(g.memory_free)} free`
      : `${fmtGiB(g.memory_used)} used · total unknown`));

    const ul = node("ul", "holders");
    const named = new Set();
    for (const h of holders) {
      const li = node("li", "holder");
      if (h.service) {
        named.add(h.service);
        li.dataset.service = h.service;
        const a = node("a", null, h.service);
        a.href = "#svc-" + h.service;
        li.append(a, " ", node("span", "mem", fmtGiB(h.used_memory)), " ", node("span", "muted", "PID " + h.pid));
      } else {
        li.classList.add("foreign");
        li.dataset.pid = String(h.pid);
        li.append(node("span", "tag", "foreign"), " ", node("span", "mem", fmtGiB(h.used_memory)),
          " ", node("span", null, "PID " + h.pid));
        if (h.command) li.append(" ", node("code", "cmd", h.command));
        li.title = h.command || "";
      }
      ul.append(li);
    }
    // Services placed here that hold nothing yet (starting, or not a CUDA process at all).
    for (const [name, ids] of Object.entries(placed)) {
      if (named.has(name) || !ids.includes(g.index)) continue;
      const li = node("li", "holder placed");
      li.dataset.service = name;
      const a = node("a", null, name);
      a.href = "#svc-" + name;
      li.append(a, " ", node("span", "muted", "placed here, no memory held"));
      ul.append(li);
    }
    if (!ul.childElementCount) ul.append(node("li", "muted", "no processes"));
    box.append(ul);
    return box;
  }

  function onEvent(data) {
    const ev = parseJSON(data);
    if (!ev || !ev.name || !ev.state) return;
    const rec = cards.get(ev.name);
    if (!rec) {
      refresh();
      return;
    }
    rec.eventAt = performance.now();
    const patch = { state: ev.state };
    for (const k of ["pid", "reason", "restarts", "last_exit"]) if (k in ev) patch[k] = ev[k];
    if ("exit_code" in ev && ev.exit_code != null) patch.last_exit = ev.exit_code;
    if (ev.state === "starting" || (ev.pid && ev.pid !== rec.svc.pid)) patch.uptime_s = 0;
    patchCard(rec, patch);
    renderSummary();
  }

  function watchEvents() {
    const conn = $("#conn");
    const set = (c, text) => { conn.dataset.conn = c; setText(conn, text); };
    follow("/api/events", onEvent, {
      // Events missed while disconnected are caught up by a full refresh on each (re)open.
      open: () => { set("live", "live"); refresh(); },
      error: (e) => set("down", "disconnected: " + e.message),
      down: () => { if (conn.dataset.conn === "live") set("down", "reconnecting…"); },
    });
  }

  // ---------- control actions ----------
  async function control(scope, action, name, button) {
    const path = action === "rolling" ? `/api/rolling/${encodeURIComponent(name)}`
      : scope === "all" ? `/api/all/${action}`
        : scope === "group" ? `/api/groups/${encodeURIComponent(name)}/${action}`
          : `/api/services/${encodeURIComponent(name)}/${action}`;
    if (button) button.disabled = true;
    try {
      let r = await api("POST", path);
      if (action === "rolling" && r.status === 409) {
        // A single replica without a surge copy: restarting it leaves a gap; ask first.
        const why = await errorText(r);
        if (!confirm(`${why}\n\nRestart it anyway?`)) return;
        r = await api("POST", path + "?force=true");
      }
      if (!r.ok) toast(`${action} ${name || "all"}: ${await errorText(r)}`);
    } catch (e) {
      toast(`${action} ${name || "all"}: ${e.message}`);
    } finally {
      if (button) button.disabled = false;
      refresh();
    }
  }

  document.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b) return;
    const action = b.dataset.action;
    const card = b.closest(".card");
    if (action === "logs") {
      openLogs(card.dataset.service);
      return;
    }
    if (card) control("service", action, card.dataset.service, b);
    else if (b.dataset.scope === "group") control("group", action, b.dataset.group, b);
    else control("all", action, null, b);
  });

  // ---------- logs ----------
  async function tailLines(name, n) {
    const r = await api("GET", `/api/services/${encodeURIComponent(name)}/logs?tail=${n}`);
    if (!r.ok) throw new Error(await errorText(r));
    const type = r.headers.get("content-type") || "";
    if (type.includes("json")) {
      const j = await r.json();
      return Array.isArray(j) ? j : j.lines || [];
    }
    return (await r.text()).split("\n").filter((l, i, a) => l !== "" || i < a.length - 1);
  }

  const logs = { name: null, ctl: null, paused: false, held: [], filter: "" };
  const logPre = $("#log-lines");

  function logLineText(d) {
    const j = d.startsWith("{") ? parseJSON(d) : null;
    return j && typeof j === "object" ? (j.line ?? j.message ?? d) : d;
  }

  function appendLogs(lines) {
    const stick = $("#log-follow").checked &&
      logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 30;
    const frag = document.createDocumentFragment();
    const f = logs.filter;
    for (const line of lines) {
      const span = document.createElement("span");
      span.textContent = line + "\n";
      if (f && !line.toLowerCase().includes(f)) span.className = "hide";
      frag.append(span);
    }
    logPre.append(frag);
    while (logPre.childElementCount > LOG_MAX) logPre.firstElementChild.remove();
    if (stick || $("#log-follow").checked) logPre.scrollTop = logPre.scrollHeight;
  }

  function onLogLine(d) {
    const line = logLineText(d);
    if (logs.paused) {
      logs.held.push(line);
      if (logs.held.length > LOG_MAX) logs.held.shift();
      setText($("#log-status"), `paused, ${logs.held.length} new`);
    } else {
      appendLogs([line]);
    }
  }

  function openLogs(name) {
    if (logs.ctl) logs.ctl.abort();
    logs.name = name;
    logs.held = [];
    logPre.textContent = "";
    setText($("#log-name"), name);
    setText($("#log-status"), "");
    $("#logs").hidden = false;
    $("#logs").scrollIntoView({ block: "nearest" });
    const path = `/api/services/${encodeURIComponent(name)}/logs/stream`;
    logs.ctl = follow(path, onLogLine, {
      open: () => setText($("#log-status"), logs.paused ? "paused" : "following"),
      error: (e) => setText($("#log-status"), "stream: " + e.message),
    });
  }

  $("#log-pause").addEventListener("click", () => {
    logs.paused = !logs.paused;
    $("#log-pause").textContent = logs.paused ? "Resume" : "Pause";
    setText($("#log-status"), logs.paused ? "paused" : "following");
    if (!logs.paused && logs.held.length) {
      appendLogs(logs.held);
      logs.held = [];
    }
  });
  $("#log-filter").addEventListener("input", (e) => {
    logs.filter = e.target.value.toLowerCase();
    for (const span of logPre.children) {
      const hide = logs.filter && !span.textContent.toLowerCase().includes(logs.filter);
      span.className = hide ? "hide" : "";
    }
  });
  $("#log-close").addEventListener("click", () => {
    if (logs.ctl) logs.ctl.abort();
    logs.ctl = null;
    logs.name = null;
    $("#logs").hidden = true;
  });

  // ---------- router ----------
  // The launcher answers {"source": "router", "workers": {"workers": [inst]}} (the router's
  // /workers) or {"source": "registry", "instances": {"data": [inst]}}; each inst lists its
  // models. {"models": [{name, instances}]} (dashboard_api's view) is accepted too.
  function instancesOf(body) {
    let list = body.workers ?? body.instances ?? [];
    if (!Array.isArray(list)) list = list.workers ?? list.data ?? [];
    return list.filter((i) => i && (i.kind == null || i.kind === "backend"));
  }

  function routerRows(body) {
    const rows = [];
    if (!body || typeof body !== "object") return rows;
    if (Array.isArray(body.models)) {
      for (const m of body.models) {
        const insts = m.instances || [];
        const meta = m.on_demand ? m : null;
        if (!insts.length) rows.push([m.name, null, meta]);
        for (const i of insts) rows.push([m.name, i, meta]);
      }
      return rows;
    }
    const byModel = new Map();
    for (const i of instancesOf(body)) {
      for (const m of i.models && i.models.length ? i.models : ["(any)"]) {
        if (!byModel.has(m)) byModel.set(m, []);
        byModel.get(m).push(i);
      }
    }
    for (const m of [...byModel.keys()].sort()) for (const i of byModel.get(m)) rows.push([m, i]);
    return rows;
  }

  function healthOf(i) {
    if (i.healthy === true) return "healthy";
    if (i.healthy === false) return i.state && i.state !== "healthy" ? i.state : "unhealthy";
    return i.health ?? i.state ?? "–";
  }

  // Why the router sends an instance nothing new (draining, stalled, circuit_open, ...), with
  // how often it stalled: the router's /workers fields or the dashboard API's gauges.
  function whyOut(i) {
    const stalls = i.stalls_total ?? i.stalls ?? 0;
    if (!i.out_reason) return stalls ? `in (${stalls} stalls)` : "–";
    return stalls ? `${i.out_reason} (${stalls} stalls)` : i.out_reason;
  }

  let routerKey = "";
  function renderRouter(body) {
    const rows = routerRows(body);
    const key = JSON.stringify(rows);
    if (key === routerKey) return;
    routerKey = key;
    const empty = $("#router-empty");
    empty.hidden = rows.length > 0;
    if (body && body.error && !rows.length) setText(empty, "Router: " + body.error);
    const tbody = $("#models tbody");
    const frag = document.createDocumentFragment();
    // On-demand models (docs/ondemand.md) carry their live state, shown even while stopped.
    const MODEL_STATE = { ready: "ok", loading: "warn", draining: "warn", failed: "bad", stopped: "" };
    for (const [model, i, meta] of rows) {
      const tr = document.createElement("tr");
      tr.dataset.model = model;
      const label = meta ? `${model} (on demand: ${meta.state ?? "?"})` : model;
      const cells = i ? [
        label, i.url ?? i.id ?? i.name ?? "–", healthOf(i),
        i.circuit ?? i.circuit_state ?? "–", String(i.in_flight ?? i.inflight ?? i.outstanding ?? 0),
        whyOut(i),
      ] : [label, meta && meta.reason ? meta.reason : "no instance", meta ? meta.state ?? "–" : "–", "–", "–", "–"];
      cells.forEach((c, k) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (k === 0 && meta) {
          td.className = MODEL_STATE[meta.state] ?? "";
          tr.dataset.state = meta.state ?? "";
        }
        if (k === 2) {
          td.className = c === "healthy" ? "ok" : c === "–" ? "" : (MODEL_STATE[c] ?? "bad");
        }
        if (k === 3) td.className = { closed: "ok", open: "bad", half_open: "warn" }[c] || "";
        if (k === 5 && c !== "–") td.className = "bad";
        tr.append(td);
      });
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
  }

  function renderCharts(stats) {
    const samples = (stats && stats.samples) || [];
    const series = {
      rps: [samples.map((s) => s.rps), (v) => fmtNum(v, 2)],
      p50: [samples.map((s) => s.p50_ms), (v) => fmtNum(v) + " ms"],
      p99: [samples.map((s) => s.p99_ms), (v) => fmtNum(v) + " ms"],
      tps: [samples.map((s) => s.tokens_per_s), (v) => fmtNum(v)],
    };
    for (const [id, [values, fmt]] of Object.entries(series)) {
      const fig = $("#chart-" + id);
      let line = $("polyline", fig);
      if (!line) {
        line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        $("svg", fig).append(line);
      }
      line.setAttribute("points", points(values, 200, 50));
      const last = values.length ? values[values.length - 1] : null;
      setText($(".now", fig), last == null ? "–" : fmt(last));
    }
  }

  // Per API key (names only): in flight, queued, tokens per minute; hidden without keys.
  let keysKey = "";
  function renderKeys(rows) {
    rows = rows || [];
    const key = JSON.stringify(rows);
    if (key === keysKey) return;
    keysKey = key;
    const table = $("#keys");
    table.hidden = rows.length === 0;
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = r.name;
      const tpm = r.tokens_per_minute == null ? "–" : fmtNum(r.tokens_per_minute);
      [r.name, String(r.in_flight), String(r.queued), tpm].forEach((c, k) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (k === 2 && r.queued > 0) td.className = "warn";
        tr.append(td);
      });
      frag.append(tr);
    }
    $("tbody", table).replaceChildren(frag);
  }

  let statsMissing = 0;
  async function pollRouter() {
    try {
      renderRouter(await getJSON("/api/router"));
    } catch (e) {
      if (e.status === 404) renderRouter({ models: [] });
    }
    if (statsMissing > 0) {
      statsMissing--; // endpoint absent: ask again only now and then
    } else {
      try {
        const stats = await getJSON("/api/router/stats");
        renderCharts(stats);
        renderKeys(stats.keys);
        $("#router .charts").hidden = false;
      } catch (e) {
        if (e.status === 404) {
          statsMissing = 15;
          $("#router .charts").hidden = true;
        }
      }
    }
    setTimeout(pollRouter, ROUTER_MS);
  }

  // ---------- start ----------
  async function main() {
    await refresh();
    watchEvents();
    setInterval(refresh, REFRESH_MS);
    pollRouter();
  }
  window.corralDashboard = { cards, refresh, openLogs, gpus };
  main();
})();
