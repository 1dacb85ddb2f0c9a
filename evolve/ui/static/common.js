// sds ui: helpers shared by every page. Data is only ever put in the page as text.
"use strict";
const sds = {
  el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  },
  fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number" && !Number.isInteger(v)) return Number(v.toPrecision(4)).toString();
    return String(v);
  },
  table(cols, rows) {  // cols: [label, fn(row) -> text | Node]
    const t = sds.el("table", {class: "grid"});
    const head = t.createTHead().insertRow();
    for (const [label] of cols) head.appendChild(sds.el("th", {}, label));
    const body = t.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      for (const [, fn] of cols) {
        const v = fn(r), td = tr.insertCell();
        if (v instanceof Node) td.appendChild(v); else td.textContent = sds.fmt(v);
      }
    }
    return t;
  },
  link(href, text) { return sds.el("a", {href: href}, text); },
  async json(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}});
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  },
};

// Copy buttons: data-copy names the element whose text is copied.
document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button.copy");
  if (!b) return;
  const text = document.getElementById(b.dataset.copy).textContent;
  let ok = false;
  try { await navigator.clipboard.writeText(text); ok = true; } catch (e) {
    const ta = sds.el("textarea"); ta.value = text; document.body.appendChild(ta);
    ta.select(); ok = document.execCommand("copy"); ta.remove();
  }
  b.dataset.copied = ok ? "1" : "0";
  const old = b.textContent; b.textContent = ok ? "Copied" : "Copy failed: select the text";
  setTimeout(() => { b.textContent = old; }, 1500);
});
