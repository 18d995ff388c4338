// lineprof's HTML report: sortable and filterable tables, the your-code /
// all-code toggle, the flame graph (icicle) and the live-heap timeline.
// Everything it draws comes from the JSON block #lineprof-data; it loads
// nothing from anywhere.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('lineprof-data').textContent);

  function fmtBytes(n) {
    var units = ['KiB', 'MiB', 'GiB', 'TiB'];
    if (n < 1024) return n + ' B';
    var v = n / 1024, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u++; }
    return v.toFixed(1) + ' ' + units[u];
  }
  function fmtTime(ns) {
    if (ns < 1e3) return ns + ' ns';
    if (ns < 1e6) return (ns / 1e3).toFixed(1) + ' µs';
    if (ns < 1e9) return (ns / 1e6).toFixed(1) + ' ms';
    return (ns / 1e9).toFixed(1) + ' s';
  }
  var METRICS = [
    { name: 'allocated', fmt: fmtBytes },
    { name: 'live at peak', fmt: fmtBytes },
    { name: 'allocations', fmt: function (n) { return String(n); } },
    { name: 'CPU time', fmt: fmtTime }
  ];

  // Tables: each header sorts its own table by its own column.
  document.querySelectorAll('table.sortable').forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var numeric = rows.some(function (r) {
          return r.cells[col] && r.cells[col].dataset.v !== undefined;
        });
        var dir = th.dataset.dir === '-1' ? 1 : th.dataset.dir === '1' ? -1 : (numeric ? -1 : 1);
        Array.prototype.forEach.call(heads, function (h) { delete h.dataset.dir; });
        th.dataset.dir = String(dir);
        var key = function (r) {
          var c = r.cells[col];
          if (!c) return numeric ? -Infinity : '';
          if (numeric) { var v = parseFloat(c.dataset.v); return isNaN(v) ? -Infinity : v; }
          return c.textContent;
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          return (x < y ? -1 : x > y ? 1 : 0) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // Filters: the box right before a table hides the rows without its text.
  document.querySelectorAll('input.filter').forEach(function (input) {
    var table = input.nextElementSibling;
    if (!table || table.tagName !== 'TABLE') return;
    input.addEventListener('input', function () {
      var q = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.style.display = !q || r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  });

  // Your code / all code.
  var focusInputs = document.querySelectorAll('input[name="focus"]');
  focusInputs.forEach(function (input) {
    input.checked = input.value === document.body.dataset.focus;
    input.addEventListener('change', function () {
      if (!input.checked) return;
      document.body.dataset.focus = input.value;
      drawFlame();
    });
  });

  // The flame graph: a tree of frames (outermost at the top) built from
  // the stacks for the chosen figure; in "your code" mode, frames that
  // are not yours are left out of each stack.
  var flame = document.getElementById('flame');
  var metricBox = document.getElementById('flame-metric');
  var searchBox = document.getElementById('flame-search');
  var matchInfo = document.getElementById('flame-match');
  var detail = document.getElementById('flame-detail');
  var zoomPath = [];

  function label(id) {
    var f = data.frames[id];
    return f[1] ? f[0] + ' (' + f[1] + ':' + f[2] + ')' : f[0];
  }
  function buildTree(metric, userOnly) {
    var root = { id: -1, name: 'all', v: 0, kids: new Map(), depth: 0 };
    data.stacks.forEach(function (s) {
      var v = s[1][metric];
      if (!(v > 0)) return;
      var frames = userOnly ? s[0].filter(function (f) { return data.frames[f][3] === 0; }) : s[0];
      root.v += v;
      var node = root;
      if (!frames.length) frames = [-2];
      frames.forEach(function (f) {
        var kid = node.kids.get(f);
        if (!kid) {
          kid = { id: f, name: f === -2 ? '[not in your code]' : label(f), v: 0, kids: new Map(),
                  parent: node, depth: node.depth + 1 };
          node.kids.set(f, kid);
        }
        kid.v += v;
        node = kid;
      });
    });
    return root;
  }
  function color(node) {
    var kind = node.id >= 0 ? data.frames[node.id][3] : 2;
    var h = 0;
    for (var i = 0; i < node.name.length; i++) h = (h * 31 + node.name.charCodeAt(i)) >>> 0;
    var light = 62 + (h % 18);
    if (kind === 0) return 'hsl(' + (18 + h % 28) + ',85%,' + light + '%)';
    if (kind === 1) return 'hsl(' + (200 + h % 30) + ',55%,' + light + '%)';
    return 'hsl(0,0%,' + (light + 8) + '%)';
  }
  var tree = null;
  function drawFlame() {
    if (!flame) return;
    var metric = Number(metricBox.value);
    tree = buildTree(metric, document.body.dataset.focus === 'user');
    // Follow the zoom path (frame ids) as far as the new tree has it.
    var zoom = tree;
    for (var i = 0; i < zoomPath.length; i++) {
      var next = zoom.kids.get(zoomPath[i]);
      if (!next) break;
      zoom = next;
    }
    render(zoom, metric);
  }
  function render(zoom, metric) {
    flame.textContent = '';
    var width = flame.clientWidth || 1000;
    var fmt = METRICS[metric].fmt;
    var total = tree.v;
    var query = searchBox.value;
    var re = null;
    if (query) {
      try { re = new RegExp(query, 'i'); } catch (e) { re = null; }
    }
    var matched = 0, maxDepth = 0;
    function box(node, x, w, inMatch) {
      var div = document.createElement('div');
      div.className = 'fg';
      var hit = !!re && node.id !== -1 && re.test(node.name);
      if (hit) { div.className += ' match'; if (!inMatch) matched += node.v; }
      if (node.depth < zoom.depth) div.className += ' dimmed';
      div.style.left = x + 'px';
      div.style.width = Math.max(w, 1) + 'px';
      div.style.top = node.depth * 17 + 'px';
      div.style.background = color(node);
      div.dataset.v = String(node.v);
      div.dataset.name = node.name;
      var share = total > 0 ? (node.v * 100 / total).toFixed(2) : '0';
      div.title = node.name + '\n' + fmt(node.v) + ' ' + METRICS[metric].name + ' (' + share + '%)';
      if (w > 30) div.textContent = node.name;
      div.addEventListener('click', function () {
        zoomPath = [];
        for (var n = node; n && n.id !== -1; n = n.parent) zoomPath.unshift(n.id);
        render(node, metric);
      });
      div.addEventListener('mouseenter', function () { detail.textContent = div.title.replace('\n', ': '); });
      flame.appendChild(div);
      maxDepth = Math.max(maxDepth, node.depth);
      return hit;
    }
    // The zoomed frame's callers span the whole width above it.
    var chain = [];
    for (var n = zoom; n; n = n.parent) chain.unshift(n);
    var inMatch = false;
    chain.forEach(function (c) { if (box(c, 0, width, inMatch)) inMatch = true; });
    function kids(node, x, w, inMatch) {
      var sorted = Array.from(node.kids.values()).sort(function (a, b) { return b.v - a.v; });
      var at = x;
      sorted.forEach(function (k) {
        var kw = node.v > 0 ? w * k.v / node.v : 0;
        if (kw >= 0.5) {
          var hit = box(k, at, kw, inMatch);
          kids(k, at, kw, inMatch || hit);
        }
        at += kw;
      });
    }
    kids(zoom, 0, width, inMatch);
    flame.style.height = (maxDepth + 1) * 17 + 2 + 'px';
    if (re) {
      matchInfo.textContent = 'matched ' + fmt(matched) + ' of ' + fmt(total) +
        ' (' + (total > 0 ? (matched * 100 / total).toFixed(1) : '0') + '%)';
      matchInfo.dataset.v = String(matched);
    } else {
      matchInfo.textContent = query ? 'not a valid pattern' : '';
      delete matchInfo.dataset.v;
    }
  }
  if (flame) {
    metricBox.addEventListener('change', function () { zoomPath = []; drawFlame(); });
    searchBox.addEventListener('input', drawFlame);
    document.getElementById('flame-reset').addEventListener('click', function () {
      zoomPath = []; drawFlame();
    });
    window.addEventListener('resize', drawFlame);
    drawFlame();
  }

  // The timeline: live heap bytes (the top line), stacked areas for the
  // lines that held most at the peak, the peak marked.
  var svg = document.getElementById('timeline');
  var t = data.timeline;
  if (svg && t && t.points.length) {
    var NS = 'http://www.w3.org/2000/svg';
    var W = 960, H = 240, L = 70, R = 20, T = 20, B = 34;
    var pts = t.points;
    var xmax = Math.max(pts[pts.length - 1][0], 1), ymax = 1, peak = pts[0];
    pts.forEach(function (p) { if (p[1] > peak[1]) peak = p; });
    ymax = Math.max(peak[1], 1);
    var sx = function (x) { return L + (W - L - R) * x / xmax; };
    var sy = function (y) { return H - B - (H - T - B) * y / ymax; };
    var el = function (tag, attrs, text) {
      var e = document.createElementNS(NS, tag);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    var palette = ['#e8743b', '#19a979', '#ed4a7b', '#945ecf', '#13a4b4'];
    // Stacked: the layer of line k lies on lines 0..k-1.
    var below = pts.map(function () { return 0; });
    t.lines.forEach(function (name, k) {
      var top = pts.map(function (p, i) { return below[i] + (p[2][k] || 0); });
      var d = 'M' + pts.map(function (p, i) { return sx(p[0]) + ',' + sy(top[i]); }).join('L');
      for (var i = pts.length - 1; i >= 0; i--) d += 'L' + sx(pts[i][0]) + ',' + sy(below[i]);
      el('path', { d: d + 'Z', fill: palette[k % palette.length], 'fill-opacity': '0.75', class: 'layer' });
      below = top;
    });
    var line = 'M' + pts.map(function (p) { return sx(p[0]) + ',' + sy(p[1]); }).join('L');
    el('path', { d: line, fill: 'none', stroke: '#333', 'stroke-width': '1.5', id: 'timeline-live' });
    el('line', { x1: L, y1: sy(0), x2: W - R, y2: sy(0), stroke: '#999' });
    el('line', { x1: L, y1: sy(0), x2: L, y2: T, stroke: '#999' });
    el('text', { x: L - 6, y: sy(ymax) + 4, 'text-anchor': 'end' }, fmtBytes(ymax));
    el('text', { x: L - 6, y: sy(0) + 4, 'text-anchor': 'end' }, '0 B');
    var xfmt = t.timed ? fmtTime : function (n) { return n + ' events'; };
    el('text', { x: W - R, y: H - 10, 'text-anchor': 'end' }, xfmt(xmax));
    el('text', { x: L, y: H - 10 }, t.timed ? 'time since the start' : 'heap events, in order');
    el('line', { x1: sx(peak[0]), y1: sy(0), x2: sx(peak[0]), y2: sy(peak[1]), stroke: '#c00',
                 'stroke-dasharray': '4 3' });
    el('circle', { cx: sx(peak[0]), cy: sy(peak[1]), r: 4, fill: '#c00' });
    var anchor = sx(peak[0]) > W / 2 ? 'end' : 'start';
    var dx = anchor === 'end' ? -8 : 8;
    var mark = el('text', { x: sx(peak[0]) + dx, y: Math.max(sy(peak[1]) + 4, T + 10), fill: '#c00',
                            'text-anchor': anchor, id: 'timeline-peak' },
                  'peak ' + fmtBytes(peak[1]) + ' at ' + xfmt(peak[0]));
    mark.dataset.v = String(peak[1]);
    var legend = document.getElementById('timeline-legend');
    t.lines.forEach(function (name, k) {
      var row = document.createElement('div');
      var sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = palette[k % palette.length];
      row.appendChild(sw);
      var share = peak[1] > 0 ? (peak[2][k] * 100 / peak[1]).toFixed(1) : '0';
      row.appendChild(document.createTextNode(name + ': ' + fmtBytes(peak[2][k]) + ' at the peak (' + share + '%)'));
      row.dataset.v = String(peak[2][k]);
      legend.appendChild(row);
    });
    var rest = document.createElement('div');
    var held = t.lines.reduce(function (s, _, k) { return s + peak[2][k]; }, 0);
    rest.textContent = 'other lines: ' + fmtBytes(peak[1] - held) + ' at the peak';
    legend.appendChild(rest);
  }
})();
