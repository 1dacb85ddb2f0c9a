// sds ui: the lineage tree of a run, laid out and drawn here on a canvas (10,000 nodes and
// more). Layout: a tidy tree along each node's first parent, depth to the right, leaves one
// row each in creation order, a parent midway between its first and last child. Second
// parents are dashed edges. Filters dim what does not match; the tree stays whole.
"use strict";
(() => {
  const root = document.getElementById("lineage");
  const canvas = document.getElementById("tree"), wrap = document.getElementById("wrap");
  const tip = document.getElementById("tip"), ctx = canvas.getContext("2d");
  const t0 = performance.now();
  const STATUS = {passed: "#2e8b57", failed: "#c0392b", rejected: "#d68910", timeout: "#7d3c98",
                  crashed: "#922b21", duplicate: "#b9770e", pending: "#5d8fd6", running: "#2a62c9",
                  copy: "#aeb6c2", none: "#cfd4dc", unused: "#cfd4dc"};
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const $ = id => document.getElementById(id);
  let D, N, idx, px, py, depth, parentOf, secondOf, match, scoreLo, scoreHi, best = -1, focus = -1;
  let view = {ox: 0, oy: 0, kx: 1, ky: 1}, W = 0, H = 0, dpr = 1, maxDepth = 0, rows = 0;
  const api = {rendered: false};
  window.sdsLineage = api;

  function viridis(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
  }

  function layout() {
    const n = D.nodes;
    N = n.id.length; idx = new Map(); n.id.forEach((id, i) => idx.set(id, i));
    parentOf = new Int32Array(N).fill(-1); secondOf = new Int32Array(N).fill(-1);
    const kids = Array.from({length: N}, () => []);
    for (let i = 0; i < N; i++) {
      const p = n.parent[i] == null ? undefined : idx.get(n.parent[i]);
      if (p !== undefined && p !== i) { parentOf[i] = p; kids[p].push(i); }
      const s = n.second[i] == null ? undefined : idx.get(n.second[i]);
      if (s !== undefined) secondOf[i] = s;
    }
    px = new Float64Array(N); py = new Float64Array(N); depth = new Int32Array(N);
    let leaf = 0; maxDepth = 0;
    for (let r = 0; r < N; r++) {
      if (parentOf[r] !== -1) continue;
      const stack = [[r, 0]];  // iterative post-order: a 10,000-deep chain is fine
      depth[r] = 0;
      while (stack.length) {
        const top = stack[stack.length - 1], v = top[0], c = kids[v];
        if (top[1] < c.length) {
          const ch = c[top[1]++]; depth[ch] = depth[v] + 1; stack.push([ch, 0]);
        } else {
          stack.pop();
          py[v] = c.length ? (py[c[0]] + py[c[c.length - 1]]) / 2 : leaf++;
          px[v] = depth[v]; if (depth[v] > maxDepth) maxDepth = depth[v];
        }
      }
    }
    rows = leaf;
    const sign = D.higher ? 1 : -1;
    const scored = n.score.map((s, i) => (s == null ? null : s));
    const vals = scored.filter(s => s != null);
    scoreLo = vals.length ? Math.min(...vals) : 0; scoreHi = vals.length ? Math.max(...vals) : 1;
    for (let i = 0; i < N; i++) {
      if (n.score[i] == null || n.confirmed[i] === 0) continue;
      if (best < 0 || sign * n.score[i] > sign * n.score[best]) best = i;
    }
  }

  function options(sel, values) {
    for (const v of values) sel.appendChild(sds.el("option", {value: String(v)}, String(v)));
  }

  function applyFilters() {
    const n = D.nodes, st = $("f-status").value, op = $("f-op").value, g = $("f-group").value;
    const lo = parseFloat($("f-min").value), hi = parseFloat($("f-max").value);
    match = new Uint8Array(N); let m = 0;
    for (let i = 0; i < N; i++) {
      let ok = (!st || n.status[i] === st) && (!op || n.op[i] === op) && (!g || String(n.group[i]) === g);
      if (ok && (!isNaN(lo) || !isNaN(hi))) {
        const s = n.score[i];
        ok = s != null && (isNaN(lo) || s >= lo) && (isNaN(hi) || s <= hi);
      }
      match[i] = ok ? 1 : 0; m += match[i];
    }
    api.matched = m;
    $("match").textContent = `${m} of ${N} ${D.kind} match`;
    legend(); draw();
  }

  function colourOf(i) {
    const n = D.nodes;
    if ($("f-colour").value === "status") return STATUS[n.status[i]] || "#999";
    if (n.score[i] == null) return n.status[i] === "copy" || n.status[i] === "none" ? STATUS.copy : "#e7b3ad";
    let t = scoreHi > scoreLo ? (n.score[i] - scoreLo) / (scoreHi - scoreLo) : 1;
    if (!D.higher) t = 1 - t;
    return viridis(Math.round(t * 24) / 24);  // 25 colours: one path each
  }

  function legend() {
    const box = $("legend"); box.replaceChildren();
    const item = (c, label) => { const s = sds.el("span"); const i = sds.el("i"); i.style.background = c;
                                 s.appendChild(i); s.appendChild(document.createTextNode(label)); box.appendChild(s); };
    if ($("f-colour").value === "status") {
      for (const s of new Set(D.nodes.status)) item(STATUS[s] || "#999", s);
    } else {
      const [a, b] = D.higher ? [scoreLo, scoreHi] : [scoreHi, scoreLo];
      item(viridis(0), `${D.metric} ${sds.fmt(a)} (worst)`); item(viridis(0.5), "…");
      item(viridis(1), `${sds.fmt(b)} (best)`); item("#e7b3ad", "failed / no score"); item(STATUS.copy, "copy (migrant)");
    }
  }

  const radius = () => Math.max(2.2, Math.min(7, Math.min(view.kx, view.ky) * 0.45));
  const SX = i => view.ox + px[i] * view.kx, SY = i => view.oy + py[i] * view.ky;

  function fit() {
    const pad = 16;
    view.kx = (W - 2 * pad) / Math.max(1, maxDepth);
    view.ky = (H - 2 * pad) / Math.max(1, rows - 1);
    view.ox = pad; view.oy = pad;
  }

  function draw() {
    const t = performance.now();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const r = radius();
    const vis = i => { const x = SX(i), y = SY(i); return x > -20 && x < W + 20 && y > -20 && y < H + 20; };
    for (const on of [0, 1]) {  // dimmed first, matching on top
      ctx.globalAlpha = on ? 0.55 : 0.08;
      ctx.strokeStyle = "#7b8494"; ctx.lineWidth = 1; ctx.setLineDash([]);
      ctx.beginPath();
      for (let i = 0; i < N; i++) {
        const p = parentOf[i];
        if (p < 0 || (match[i] && match[p] ? 1 : 0) !== on || (!vis(i) && !vis(p))) continue;
        ctx.moveTo(SX(p), SY(p)); ctx.lineTo(SX(i), SY(i));
      }
      ctx.stroke();
      if ($("f-second").checked) {
        ctx.strokeStyle = "#d68910"; ctx.setLineDash([3, 3]); ctx.beginPath();
        for (let i = 0; i < N; i++) {
          const p = secondOf[i];
          if (p < 0 || (match[i] && match[p] ? 1 : 0) !== on || (!vis(i) && !vis(p))) continue;
          ctx.moveTo(SX(p), SY(p)); ctx.lineTo(SX(i), SY(i));
        }
        ctx.stroke(); ctx.setLineDash([]);
      }
      ctx.globalAlpha = on ? 1 : 0.15;
      const byColour = new Map();
      for (let i = 0; i < N; i++) {
        if (match[i] !== on || !vis(i)) continue;
        const c = colourOf(i);
        if (!byColour.has(c)) byColour.set(c, []);
        byColour.get(c).push(i);
      }
      for (const [c, list] of byColour) {
        ctx.fillStyle = c; ctx.beginPath();
        for (const i of list) { ctx.moveTo(SX(i) + r, SY(i)); ctx.arc(SX(i), SY(i), r, 0, 2 * Math.PI); }
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
    for (const [i, c] of [[best, "#d4ac0d"], [focus, "#c0392b"]]) {
      if (i < 0) continue;
      ctx.strokeStyle = c; ctx.lineWidth = 2.5; ctx.beginPath();
      ctx.arc(SX(i), SY(i), r + 4, 0, 2 * Math.PI); ctx.stroke();
    }
    api.drawMs = performance.now() - t;
    if (!api.rendered) {
      api.rendered = true; api.firstRenderMs = performance.now() - t0;
      api.renderedAt = performance.now();  // ms since the navigation started
      $("timing").textContent = `${N} ${D.kind}: data ${api.fetchMs.toFixed(0)} ms, layout ` +
        `${api.layoutMs.toFixed(0)} ms, first draw ${api.drawMs.toFixed(0)} ms.`;
      root.dataset.rendered = "1";
    }
  }

  function resize() {
    dpr = window.devicePixelRatio || 1;
    const b = wrap.getBoundingClientRect();
    const oldW = W, oldH = H;
    W = b.width; H = b.height;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    if (oldW && oldH) { view.kx *= W / oldW; view.ky *= H / oldH; view.ox *= W / oldW; view.oy *= H / oldH; }
  }

  function nearest(mx, my) {
    const r = radius() + 4;
    let bi = -1, bd = r * r;
    for (let i = 0; i < N; i++) {
      const dx = SX(i) - mx, dy = SY(i) - my, d = dx * dx + dy * dy;
      if (d <= bd) { bd = d; bi = i; }
    }
    return bi;
  }

  function label(i) {
    const n = D.nodes, p = D.prefix;
    const lines = [`${p}${n.id[i]} · ${n.op[i]} · ${D.group_name} ${n.group[i]}` + (n.gen[i] != null ? ` · gen ${n.gen[i]}` : "")];
    lines.push(`${n.status[i]}${n.stage[i] && n.status[i] !== "passed" ? " at " + n.stage[i] : ""}` +
               (n.score[i] != null ? ` · ${D.metric} ${sds.fmt(n.score[i])}` + (n.confirmed[i] === 0 ? " (sim, unconfirmed)" : "") : ""));
    if (n.parent[i] != null && parentOf[i] < 0) lines.push(`parent ${p}${n.parent[i]} is outside this run`);
    return lines.join("\n");
  }

  function events() {
    let drag = null, moved = false;
    canvas.addEventListener("mousedown", e => { drag = [e.offsetX, e.offsetY]; moved = false; canvas.style.cursor = "grabbing"; });
    window.addEventListener("mouseup", () => { drag = null; canvas.style.cursor = "grab"; });
    canvas.addEventListener("mousemove", e => {
      if (drag) {
        const dx = e.offsetX - drag[0], dy = e.offsetY - drag[1];
        if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
        view.ox += dx; view.oy += dy; drag = [e.offsetX, e.offsetY]; tip.hidden = true; draw(); return;
      }
      const i = nearest(e.offsetX, e.offsetY);
      if (i < 0) { tip.hidden = true; canvas.style.cursor = "grab"; return; }
      canvas.style.cursor = "pointer";
      tip.textContent = label(i); tip.hidden = false;
      tip.style.left = `${Math.min(e.offsetX + 12, W - 260)}px`; tip.style.top = `${e.offsetY + 12}px`;
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("click", e => {
      if (moved) return;
      const i = nearest(e.offsetX, e.offsetY);
      if (i >= 0) window.location.href = `/${D.kind === "programs" ? "program" : "runtime"}/${D.nodes.id[i]}`;
    });
    canvas.addEventListener("wheel", e => {
      e.preventDefault();
      const f = Math.exp(-e.deltaY * 0.0015), mx = e.offsetX, my = e.offsetY;
      const fx = e.shiftKey ? 1 : f;  // shift: zoom rows only
      view.ox = mx - (mx - view.ox) * fx; view.kx *= fx;
      view.oy = my - (my - view.oy) * f; view.ky *= f;
      draw();
    }, {passive: false});
    for (const id of ["f-status", "f-op", "f-group", "f-min", "f-max"]) {
      for (const ev of ["input", "change"]) $(id).addEventListener(ev, applyFilters);
    }
    for (const id of ["f-colour", "f-second"]) $(id).addEventListener("change", () => { legend(); draw(); });
    $("f-fit").addEventListener("click", () => { fit(); draw(); });
    window.addEventListener("resize", () => { resize(); draw(); });
  }

  function centerOn(i, k) {
    view.kx = Math.max(view.kx, k); view.ky = Math.max(view.ky, k);
    view.ox = W / 2 - px[i] * view.kx; view.oy = H / 2 - py[i] * view.ky;
  }

  api.screenPos = id => { const i = idx.get(id); return i === undefined ? null : [SX(i), SY(i)]; };
  api.centerOn = id => { const i = idx.get(id); if (i !== undefined) { centerOn(i, 24); draw(); } };

  (async () => {
    const url = `/api/run/${root.dataset.run}/lineage?kind=${encodeURIComponent(root.dataset.kind)}`;
    try { D = await sds.json(url); } catch (e) { $("match").textContent = "could not load: " + e.message; return; }
    api.fetchMs = performance.now() - t0;
    const tl = performance.now();
    layout();
    api.layoutMs = performance.now() - tl; api.count = N;
    const n = D.nodes;
    options($("f-status"), [...new Set(n.status)].sort());
    options($("f-op"), [...new Set(n.op)].sort());
    options($("f-group"), [...new Set(n.group.map(String))].sort((a, b) => a.localeCompare(b, undefined, {numeric: true})));
    if (N > 2000) $("f-second").checked = false;  // thousands of dashed edges hide the tree
    resize(); fit();
    const want = parseInt(new URLSearchParams(location.search).get("focus"), 10);
    if (!isNaN(want) && idx.has(want)) { focus = idx.get(want); centerOn(focus, 24); }
    events(); applyFilters();
  })();
})();
