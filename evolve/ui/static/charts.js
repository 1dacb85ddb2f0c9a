// sds ui: small SVG charts (step lines with points, bars, stacked bars), no library.
"use strict";
const sdsChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2a62c9", "#e07b24", "#2e8b57", "#c0392b", "#7d3c98", "#17a2b8",
                   "#8c6d31", "#d6336c", "#5d6d7e", "#a9b92f"];
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(v);
    return out;
  }
  function frame(box, w, h, m) {
    box.replaceChildren();
    const root = svg("svg", {viewBox: `0 0 ${w} ${h}`, role: "img"});
    box.appendChild(root);
    return root;
  }
  function empty(box, text) {
    box.replaceChildren();
    box.appendChild(sds.el("div", {class: "empty"}, text));
  }
  // series: [{name, x, y, points: [[x, y]], color}]
  function lines(box, series, opts) {
    const all = series.flatMap(s => s.x.map((x, i) => [x, s.y[i]]).concat(s.points || []));
    if (!all.length) return empty(box, opts.empty || "no data yet");
    const keyed = series.length > 1 || opts.legend;  // a legend to the right of the plot
    const w = 640, h = 260, m = {l: 58, r: keyed ? 150 : 12, t: 10, b: 36};
    const root = frame(box, w, h, m);
    let [x0, x1] = [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))];
    let [y0, y1] = [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.05 || 1; y0 -= pad; y1 += pad;
    const X = v => m.l + (v - x0) / (x1 - x0) * (w - m.l - m.r);
    const Y = v => h - m.b - (v - y0) / (y1 - y0) * (h - m.t - m.b);
    const ax = svg("g", {class: "axis"}); root.appendChild(ax);
    for (const t of ticks(y0, y1, 5)) {
      ax.appendChild(svg("line", {x1: m.l, x2: w - m.r, y1: Y(t), y2: Y(t), class: "gridline"}));
      ax.appendChild(svg("text", {x: m.l - 6, y: Y(t) + 4, "text-anchor": "end"}, sds.fmt(t)));
    }
    for (const t of ticks(x0, x1, 6)) {
      ax.appendChild(svg("text", {x: X(t), y: h - m.b + 15, "text-anchor": "middle"}, sds.fmt(t)));
    }
    ax.appendChild(svg("line", {x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b}));
    ax.appendChild(svg("text", {x: (m.l + w - m.r) / 2, y: h - 4, "text-anchor": "middle"}, opts.xlabel || ""));
    ax.appendChild(svg("text", {x: 12, y: (h - m.b) / 2, transform: `rotate(-90 12 ${(h - m.b) / 2})`,
                                "text-anchor": "middle"}, opts.ylabel || ""));
    series.forEach((s, k) => {
      const color = s.color || PALETTE[k % PALETTE.length];
      const g = svg("g", {"data-series": s.name}); root.appendChild(g);
      for (const p of (s.points || [])) {
        const c = svg("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2, fill: color, "fill-opacity": 0.25});
        g.appendChild(c);
      }
      if (s.x.length) {
        let d = `M${X(s.x[0])},${Y(s.y[0])}`;
        for (let i = 1; i < s.x.length; i++) {
          d += opts.linear ? `L${X(s.x[i])},${Y(s.y[i])}` : `H${X(s.x[i])}V${Y(s.y[i])}`;
        }
        g.appendChild(svg("path", {d: d, fill: "none", stroke: color, "stroke-width": 2, class: "best"}));
      }
    });
    if (keyed) {
      series.forEach((s, k) => {
        const y = m.t + 12 + 16 * k, x = w - m.r + 12;
        root.appendChild(svg("rect", {x: x, y: y - 9, width: 10, height: 10,
                                      fill: s.color || PALETTE[k % PALETTE.length]}));
        root.appendChild(svg("text", {x: x + 14, y: y}, s.name));
      });
    }
  }
  // horizontal bars: items [[label, value, cssColor]]
  function bars(box, items, opts) {
    if (!items.length) return empty(box, opts.empty || "none");
    const w = 640, row = 22, h = 16 + row * items.length, lw = 130;
    const root = frame(box, w, h);
    const max = Math.max(...items.map(i => i[1]), 1);
    items.forEach(([label, v, color], k) => {
      const y = 8 + k * row;
      root.appendChild(svg("text", {x: lw - 6, y: y + 13, "text-anchor": "end"}, label));
      const bw = (w - lw - 60) * v / max;
      root.appendChild(svg("rect", {x: lw, y: y + 2, width: Math.max(bw, 1), height: row - 6,
                                    fill: color || PALETTE[0], "data-label": label}));
      root.appendChild(svg("text", {x: lw + bw + 5, y: y + 13}, sds.fmt(v)));
    });
  }
  // stacked columns: buckets [{key: count}], keys in order
  function stacked(box, buckets, keys, opts) {
    if (!buckets.length) return empty(box, opts.empty || "no evaluations yet");
    const w = 640, h = 240, m = {l: 40, r: 150, t: 10, b: 30};
    const root = frame(box, w, h);
    const tot = buckets.map(b => keys.reduce((a, k) => a + (b[k] || 0), 0));
    const bw = (w - m.l - m.r) / buckets.length;
    buckets.forEach((b, i) => {
      let y = h - m.b;
      keys.forEach((k, j) => {
        const share = tot[i] ? (b[k] || 0) / tot[i] : 0, bh = share * (h - m.t - m.b);
        y -= bh;
        if (bh > 0) root.appendChild(svg("rect", {x: m.l + i * bw + 1, y: y, width: bw - 2, height: bh,
                                                  fill: PALETTE[j % PALETTE.length]}));
      });
      root.appendChild(svg("text", {x: m.l + i * bw + bw / 2, y: h - m.b + 14, "text-anchor": "middle"},
                           String(i + 1)));
    });
    root.appendChild(svg("text", {x: m.l, y: h - 2}, opts.xlabel || ""));
    for (const t of [0, 0.5, 1]) {
      root.appendChild(svg("text", {x: m.l - 4, y: h - m.b - t * (h - m.t - m.b) + 4, "text-anchor": "end"},
                           `${t * 100}%`));
    }
    keys.forEach((k, j) => {
      const y = m.t + 10 + j * 16;
      root.appendChild(svg("rect", {x: w - m.r + 10, y: y - 9, width: 10, height: 10, fill: PALETTE[j % PALETTE.length]}));
      root.appendChild(svg("text", {x: w - m.r + 24, y: y}, k));
    });
  }
  return {lines, bars, stacked, PALETTE};
})();
