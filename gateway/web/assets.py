"""The admin UI's stylesheet, script and icon, served by the gateway itself at ``/admin/static/``.

They live in Python strings rather than files so that every way of installing the package (wheel,
editable, container image) ships them, and nothing is ever fetched from elsewhere: the page works
on an air-gapped incident bridge, and the CSP can say ``'self'`` and nothing else. The URLs carry a
hash of the content, so browsers may cache them for as long as they like.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CSS = """
:root {
  --bg: #0b0f14; --panel: #11171f; --panel2: #161e28; --line: #233041; --line2: #1b2531;
  --text: #e6edf3; --dim: #8b98a9; --ok: #3fb950; --warn: #d29922; --bad: #f85149;
  --info: #58a6ff; --hot: #f0883e;
  --mono: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.45 var(--sans); }
a { color: var(--info); text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono, pre { font-family: var(--mono); font-size: 12.5px; }
code { color: #c9d1d9; }
.dim { color: var(--dim); }

.topbar { position: sticky; top: 0; z-index: 5; display: flex; align-items: center; gap: 18px;
  padding: 10px 20px; background: rgba(11, 15, 20, .94); border-bottom: 1px solid var(--line); }
.brand { display: flex; align-items: center; gap: 9px; font-weight: 700; font-size: 15px;
  color: var(--text); white-space: nowrap; }
.brand:hover { text-decoration: none; }
.brand span { color: var(--dim); font-weight: 500; }
.brand .mark { width: 12px; height: 12px; border-radius: 3px; transform: rotate(45deg);
  background: linear-gradient(135deg, var(--hot), #d2a8ff); }
.summary { display: flex; gap: 8px; flex-wrap: wrap; flex: 1; }
.stat { padding: 3px 11px; border-radius: 999px; border: 1px solid var(--line); font-size: 12.5px;
  font-weight: 600; color: var(--dim); background: var(--panel); white-space: nowrap; }
.stat:hover { text-decoration: none; border-color: var(--dim); }
.stat.hot { color: #1a1206; background: var(--hot); border-color: var(--hot); }
.stat.bad { color: var(--bad); border-color: rgba(248, 81, 73, .55); background: rgba(248, 81, 73, .1); }
.stat.good { color: var(--ok); }
.who { display: flex; align-items: center; gap: 10px; white-space: nowrap; margin-left: auto; }
.who .user { font-weight: 600; }
.who .dim { font-size: 12.5px; }
.logout { margin: 0; }

.grid { display: grid; grid-template-columns: minmax(0, 11fr) minmax(0, 10fr); gap: 16px;
  padding: 16px 20px 4px; align-items: start; }
@media (max-width: 1150px) { .grid { grid-template-columns: minmax(0, 1fr); } }
.single { max-width: 980px; padding: 8px 20px 24px; }
.crumb { margin: 8px 0 12px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; margin-bottom: 16px; }
.panel h2 { display: flex; align-items: center; gap: 8px; margin: 0 0 12px; font-size: 12.5px;
  font-weight: 700; text-transform: uppercase; letter-spacing: .07em; color: var(--dim); }
.panel h3 { margin: 14px 0 8px; font-size: 11.5px; text-transform: uppercase; letter-spacing: .07em;
  color: var(--dim); }
.count { font-size: 12px; font-weight: 700; padding: 1px 8px; border-radius: 999px;
  background: var(--panel2); color: var(--text); letter-spacing: 0; text-transform: none; }
.count.hot { background: var(--hot); color: #1a1206; }
.count.bad { background: rgba(248, 81, 73, .15); color: var(--bad); }
.count.good { color: var(--ok); }
.count.warn { background: rgba(210, 153, 34, .15); color: var(--warn); }

.cards { display: grid; gap: 12px; }
.card { background: var(--panel2); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.approval { border-left: 3px solid var(--hot); }
.approval.urgent { border-left-color: var(--bad); }
.approval.is-approved, .approval.is-used { border-left-color: var(--ok); }
.approval.is-denied { border-left-color: var(--bad); }
.approval.is-expired { border-left-color: var(--dim); }
.approval.is-expired .decide { opacity: .5; }
.approval header { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; margin-bottom: 8px; }
.tool { font-family: var(--mono); font-size: 15px; font-weight: 700; color: var(--text); }
.chip { font-size: 11.5px; padding: 1px 7px; border-radius: 4px; border: 1px solid var(--line);
  color: var(--text); background: var(--panel); }
.chip.subtle { color: var(--dim); }
.countdown, .approval header .badge { margin-left: auto; }
.countdown { font-family: var(--mono); font-size: 13px; font-weight: 700; color: var(--hot); }
.countdown.urgent { color: var(--bad); }
.countdown.gone { color: var(--dim); }
.meta { display: grid; grid-template-columns: 86px minmax(0, 1fr); gap: 3px 12px; margin: 0 0 10px;
  font-size: 13px; }
.meta dt { color: var(--dim); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.reason { color: var(--text); }
.reason::before { content: "— "; color: var(--dim); }
.args { margin: 0 0 10px; padding: 10px 12px; background: #0a0e13; border: 1px solid var(--line2);
  border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 280px; overflow: auto;
  color: #c9d1d9; line-height: 1.5; }
.j-k { color: #79c0ff; } .j-s { color: #a5d6ff; } .j-n { color: #ffa657; } .j-b { color: #ff7b72; }
.j-p { color: var(--dim); } .j-r { color: var(--warn); font-style: italic; }
.decide { display: flex; gap: 8px; flex-wrap: wrap; margin: 0; }
.decide .comment { flex: 1; min-width: 220px; }
.note, .decision { margin: 0; font-size: 13px; color: var(--dim); }
.note.locked { padding: 7px 10px; border: 1px dashed var(--line); border-radius: 6px; }
.note strong { color: var(--text); }
.decision strong { color: var(--text); }
q { color: var(--text); }

input[type=text], input[type=password] { background: #0a0e13; border: 1px solid var(--line);
  border-radius: 6px; color: var(--text); padding: 7px 10px; font: inherit; }
input:focus, .btn:focus-visible { outline: 2px solid var(--info); outline-offset: -1px; }
.btn { border: 1px solid transparent; border-radius: 6px; padding: 7px 18px; font: inherit;
  font-weight: 700; cursor: pointer; }
.btn.approve { background: #238636; color: #fff; border-color: #2ea043; }
.btn.approve:hover { background: #2ea043; }
.btn.deny { background: transparent; color: var(--bad); border-color: rgba(248, 81, 73, .6); }
.btn.deny:hover { background: rgba(248, 81, 73, .12); }
.btn.ghost { background: transparent; color: var(--dim); border-color: var(--line); padding: 3px 10px;
  font-weight: 600; font-size: 12.5px; }
.btn.wide { width: 100%; }
.btn:disabled { opacity: .45; cursor: not-allowed; }

.table { width: 100%; border-collapse: collapse; font-size: 13px; }
.table th { text-align: left; font-size: 11px; font-weight: 700; text-transform: uppercase;
  letter-spacing: .05em; color: var(--dim); padding: 4px 8px; border-bottom: 1px solid var(--line); }
.table td { padding: 5px 8px; border-bottom: 1px solid var(--line2); vertical-align: top;
  overflow-wrap: break-word; }
.table td.mono, .table td.who-cell, .upstream-cell { white-space: nowrap; }
.scroll { overflow-x: auto; }
.table tr:last-child td { border-bottom: 0; }
.table .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.nowrap { white-space: nowrap; }
.err { color: var(--bad); font-size: 12.5px; }
.decided { list-style: none; margin: 0; padding: 0; font-size: 13px; }
.decided li { padding: 6px 0; border-bottom: 1px solid var(--line2); }
.decided li:last-child { border-bottom: 0; }
.decided .line { display: flex; align-items: baseline; gap: 7px; flex-wrap: wrap; }
.decided .tool-name { font-weight: 600; }
.decided .by { margin-left: auto; }
.decided time { color: var(--dim); font-variant-numeric: tabular-nums; }
.decided .said { display: block; margin: 3px 0 0 2px; color: var(--dim); font-style: italic; }
.calls tr.bad td:first-child { box-shadow: inset 2px 0 var(--bad); }
.calls tr.warn td:first-child { box-shadow: inset 2px 0 var(--warn); }
.badge { display: inline-block; font-size: 11.5px; font-weight: 700; padding: 1px 7px; border-radius: 4px;
  white-space: nowrap; }
.badge.ok { background: rgba(63, 185, 80, .15); color: var(--ok); }
.badge.warn { background: rgba(210, 153, 34, .15); color: var(--warn); }
.badge.bad { background: rgba(248, 81, 73, .15); color: var(--bad); }
.badge.info { background: rgba(88, 166, 255, .15); color: var(--info); }
.badge.muted { background: var(--panel); color: var(--dim); }
.dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 7px;
  vertical-align: 1px; background: var(--dim); }
.dot.ok { background: var(--ok); box-shadow: 0 0 6px rgba(63, 185, 80, .7); }
.dot.warn { background: var(--warn); }
.dot.bad { background: var(--bad); box-shadow: 0 0 6px rgba(248, 81, 73, .7); }
.circuits { display: flex; flex-wrap: wrap; gap: 6px; }
.circuit { display: inline-flex; align-items: center; font-size: 12.5px; padding: 3px 9px;
  border-radius: 6px; border: 1px solid var(--line); background: var(--panel2); }
.circuit em { font-style: normal; font-weight: 700; margin-left: 6px; }
.circuit.ok em { color: var(--ok); } .circuit.warn em { color: var(--warn); }
.circuit.bad { border-color: rgba(248, 81, 73, .55); } .circuit.bad em { color: var(--bad); }

.flash { margin: 12px 20px 0; padding: 10px 14px; border-radius: 8px; border: 1px solid; font-weight: 600; }
.flash.ok { color: var(--ok); border-color: rgba(63, 185, 80, .5); background: rgba(63, 185, 80, .08); }
.flash.warn { color: var(--warn); border-color: rgba(210, 153, 34, .5); background: rgba(210, 153, 34, .08); }
.flash.bad { color: var(--bad); border-color: rgba(248, 81, 73, .5); background: rgba(248, 81, 73, .08); }
.single .flash, .login .flash { margin: 0 0 12px; }
.empty { display: grid; gap: 2px; padding: 22px; text-align: center; color: var(--dim);
  border: 1px dashed var(--line); border-radius: 8px; }
.empty strong { color: var(--text); font-weight: 600; }
.empty-line { margin: 0; color: var(--dim); font-size: 13px; }
.foot { color: var(--dim); font-size: 12px; padding: 0 20px 20px; }
body.stale .grid { opacity: .6; }

.login { display: grid; place-items: center; min-height: 72vh; padding: 20px; }
.login-card { width: min(420px, 100%); display: grid; gap: 10px; padding: 22px; }
.login-card h1 { margin: 0; font-size: 20px; }
.login-card p { margin: 0; }
.login-card label { font-size: 12.5px; color: var(--dim); font-weight: 600; }
@media (max-width: 720px) {
  .topbar { flex-wrap: wrap; gap: 10px; padding: 10px 12px; }
  .summary { order: 3; flex-basis: 100%; }
  .grid { padding: 12px; }
  .meta { grid-template-columns: 1fr; }
  .meta dt { margin-top: 4px; }
}
"""

JS = """
// The admin page's one script: countdowns, local times, and refreshing the panels in place without
// losing a comment being typed. Everything works without it, minus the live updates.
"use strict";
(function () {
  const body = document.body;
  const source = body.dataset.refresh;
  const every = Number(body.dataset.refreshMs) || 2500;
  const URGENT_S = 120;

  function fmt(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(sec).padStart(2, "0") + "s";
    return sec + "s";
  }

  // Counts down from the seconds the server said were left when it rendered the element, on the
  // browser's monotonic clock: a skewed wall clock on the admin's laptop cannot distort it.
  function tick() {
    const now = performance.now();
    for (const el of document.querySelectorAll("[data-left]")) {
      if (!el.dataset.t0) el.dataset.t0 = String(now);
      const left = Number(el.dataset.left) - (now - Number(el.dataset.t0)) / 1000;
      const card = el.closest(".approval");
      if (left <= 0) {
        el.textContent = "expired";
        el.classList.add("gone");
        if (card) {
          card.classList.add("is-expired");
          for (const b of card.querySelectorAll("button")) b.disabled = true;
        }
      } else {
        el.textContent = fmt(left) + " left";
        el.classList.toggle("urgent", left < URGENT_S);
        if (card) card.classList.toggle("urgent", left < URGENT_S);
      }
    }
  }

  function localTimes(root) {
    for (const el of root.querySelectorAll("time[data-epoch]")) {
      el.textContent = new Date(Number(el.dataset.epoch) * 1000).toLocaleTimeString([], { hour12: false });
    }
  }

  // Keeps the cards that are still there (their inputs, focus and typed comments with them), adds
  // new ones and drops decided ones, without moving a node that is already in place.
  function reconcile(current, fresh) {
    const old = new Map();
    for (const el of current.querySelectorAll(":scope > [data-key]")) old.set(el.dataset.key, el);
    const wanted = [];
    for (const el of fresh.querySelectorAll(":scope > [data-key]")) {
      const kept = old.get(el.dataset.key);
      if (kept && el.dataset.key !== "empty") {
        const a = kept.querySelector("[data-left]"), b = el.querySelector("[data-left]");
        if (a && b) { a.dataset.left = b.dataset.left; delete a.dataset.t0; }
        old.delete(el.dataset.key);
        wanted.push(kept);
      } else {
        wanted.push(document.importNode(el, true));
      }
    }
    for (const el of old.values()) el.remove();
    wanted.forEach((el, i) => {
      if (current.children[i] !== el) current.insertBefore(el, current.children[i] || null);
    });
    while (current.children.length > wanted.length) current.lastElementChild.remove();
  }

  function swap(fresh) {
    const current = document.getElementById(fresh.id);
    if (!current) return;
    const keepOld = current.querySelector("[data-keyed]"), keepNew = fresh.querySelector("[data-keyed]");
    if (!keepOld || !keepNew) { current.replaceWith(document.importNode(fresh, true)); return; }
    for (const name of fresh.getAttributeNames()) current.setAttribute(name, fresh.getAttribute(name));
    const h = current.querySelector("h2"), nh = fresh.querySelector("h2");
    if (h && nh) h.replaceWith(document.importNode(nh, true));
    reconcile(keepOld, keepNew);
  }

  function banner(text, link) {
    const slot = document.getElementById("connection");
    if (!slot) return;
    slot.replaceChildren();
    body.classList.toggle("stale", Boolean(text));
    if (!text) return;
    const div = document.createElement("div");
    div.className = "flash bad";
    div.setAttribute("role", "alert");
    div.textContent = text + " ";
    if (link) {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      div.append(a);
    }
    slot.append(div);
  }

  async function refresh() {
    try {
      const res = await fetch(source, { credentials: "same-origin", cache: "no-store" });
      if (res.status === 401 || res.status === 403) {
        banner("Your admin session has ended.", { href: "/admin/login?next=/admin", text: "Sign in again" });
        return false;
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      for (const fresh of doc.querySelectorAll("[data-panel]")) swap(fresh);
      const summary = document.getElementById("summary");
      if (summary && summary.dataset.title) document.title = summary.dataset.title;
      localTimes(document);
      tick();
      banner(null);
      const updated = document.getElementById("updated");
      if (updated) updated.textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
    } catch (err) {
      banner("Cannot reach the gateway (" + err.message + "); retrying.");
    }
    return true;
  }

  async function loop() {
    if (await refresh()) setTimeout(loop, document.hidden ? every * 4 : every);
  }

  // A double click must not send a second decision (it would only earn a conflict message).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.busy) event.preventDefault();
    form.dataset.busy = "1";
  });

  localTimes(document);
  tick();
  setInterval(tick, 1000);
  if (source) setTimeout(loop, every);
})();
"""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect x="3" y="3" width="10" height="10" rx="2" transform="rotate(45 8 8)" fill="#f0883e"/></svg>'
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    version: str


def _asset(text: str, media_type: str) -> Asset:
    body = text.strip().encode("utf-8") + b"\n"
    return Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])


ASSETS: dict[str, Asset] = {
    "admin.css": _asset(CSS, "text/css; charset=utf-8"),
    "admin.js": _asset(JS, "text/javascript; charset=utf-8"),
    "favicon.svg": _asset(FAVICON, "image/svg+xml"),
}


def asset_url(name: str) -> str:
    return f"/admin/static/{name}?v={ASSETS[name].version}"
