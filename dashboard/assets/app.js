// baton dashboard: polls the JSON API once a second and redraws the page.
// Hand-written, no dependencies, no external resources: it works offline.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg'; // a namespace name, never fetched
  const POLL_MS = 1000;
  const REPORT_MS = 5000;
  const BROKER_MS = 3000;
  const LIST_LIMIT = 100;
  const OUTBOX_AGE = 'outbox.oldest_age_ms';
  const PARKED = 'signals.parked';

  // Graph geometry, in SVG pixels.
  const NODE_H = 44;
  const ROW_H = NODE_H + 18;
  const COL_GAP = 56;
  const MARGIN = 20;
  const PAD_X = 12;
  const MIN_W = 120;
  const MAX_LABEL = 44;
  // A graph wider than its panel is drawn smaller, down to this scale,
  // so that a whole conversation is seen at once; beyond it, it scrolls.
  const MIN_SCALE = 0.5;

  const STATE_LABEL = {
    pending: 'pending',
    in_flight: 'in flight',
    applied: 'applied',
    done: 'done',
    parked: 'parked',
  };

  const state = {
    selected: null,     // id of the conversation drawn as a graph
    selectedNode: null, // id of the signal whose details are shown
    graphKey: '',       // what was drawn last, to redraw only on change
    lastConversation: null,
    ageLegend: '',
    brokerKey: '',      // what the parked-in-the-broker list shows, to rebuild it only on change
  };

  const $ = (id) => document.getElementById(id);

  // h builds an HTML element; attributes named "text" and "class" set the
  // text content and the class list.
  function h(tag, attrs, ...kids) {
    return build(document.createElement(tag), attrs, kids);
  }

  function s(tag, attrs, ...kids) {
    return build(document.createElementNS(SVG_NS, tag), attrs, kids);
  }

  function build(e, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids) {
      if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
    }
    return e;
  }

  async function getJSON(path) {
    const res = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!res.ok) {
      let msg = res.statusText;
      try {
        const body = await res.json();
        msg = body.error || body.detail || msg; // the dashboard's errors, or a problem document
      } catch (_) { /* not JSON */ }
      const err = new Error(`${path}: ${res.status} ${msg}`);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  // Go writes nanoseconds; keep milliseconds so every engine parses it.
  function parseTime(t) {
    if (!t) return NaN;
    return Date.parse(String(t).replace(/(\.\d{3})\d+/, '$1'));
  }

  const fmtInt = (n) => Number(n).toLocaleString('en-US');
  const shortId = (id) => (id ? String(id).slice(0, 8) : '?');
  const label = (n) => `${n.type || '?'} @${n.destination || '?'}`;

  function fmtAge(ms) {
    if (!Number.isFinite(ms)) return '—';
    ms = Math.max(0, ms);
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const sec = ms / 1000;
    if (sec < 60) return `${sec.toFixed(sec < 10 ? 1 : 0)} s`;
    const min = Math.floor(sec / 60);
    if (min < 60) return `${min}m ${Math.floor(sec % 60)}s`;
    const hr = Math.floor(min / 60);
    if (hr < 48) return `${hr}h ${min % 60}m`;
    return `${Math.floor(hr / 24)}d ${hr % 24}h`;
  }

  const ago = (t, now) => `${fmtAge(now - parseTime(t))} ago`;

  function truncate(text, max) {
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  // ---- conversations list ----

  function renderList(list) {
    const now = parseTime(list.time);
    const ul = $('conversations');
    $('conversations-count').textContent = fmtInt(list.total);
    $('conversations-empty').hidden = list.conversations.length > 0;
    if (!state.selected && list.conversations.length > 0) {
      state.selected = list.conversations[0].id;
    }
    const items = list.conversations.map((c) => {
      const badges = [h('span', { class: 'badge', text: `${c.signals} signal${c.signals === 1 ? '' : 's'}` })];
      if (c.in_flight) badges.push(h('span', { class: 'badge flight', text: `${c.in_flight} in flight` }));
      if (c.parked) badges.push(h('span', { class: 'badge parked', text: `${c.parked} parked` }));
      if (c.duplicates) badges.push(h('span', { class: 'badge dup', text: `${c.duplicates} dup` }));
      return h('li', {
        'data-id': c.id,
        'data-in-flight': c.in_flight,
        'data-parked': c.parked,
        class: c.id === state.selected ? 'selected' : null,
        title: `conversation ${c.id}`,
      },
      h('div', { class: 'line' },
        h('span', { class: 'title', text: c.root ? label(c.root) : `conversation ${shortId(c.id)}` }),
        h('span', { class: 'when', text: ago(c.updated, now) })),
      h('div', { class: 'line' },
        h('span', { class: 'id mono', text: shortId(c.id) }),
        h('span', { class: 'badges' }, ...badges)));
    });
    ul.replaceChildren(...items);
  }

  function select(id) {
    if (!id || id === state.selected) return;
    state.selected = id;
    state.selectedNode = null;
    state.graphKey = '';
    history.replaceState(null, '', `#${id}`);
    for (const li of $('conversations').querySelectorAll('li[data-id]')) {
      li.classList.toggle('selected', li.dataset.id === id);
    }
    refreshGraph().catch((e) => console.warn('baton dashboard:', e.message));
  }

  // ---- the graph ----

  let measureCtx = null;
  function textWidth(text, weight) {
    if (!measureCtx) measureCtx = document.createElement('canvas').getContext('2d');
    const family = getComputedStyle(document.body).fontFamily;
    measureCtx.font = `${weight} 13px ${family}`;
    return measureCtx.measureText(text).width;
  }

  async function refreshGraph() {
    const id = state.selected;
    if (!id) {
      drawMessage('Select a conversation to draw it.');
      return;
    }
    let conv;
    try {
      conv = await getJSON(`api/conversations/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404 || e.status === 400) {
        if (id === state.selected) {
          state.graphKey = '';
          drawMessage('This conversation is no longer recorded.');
          $('graph-meta').textContent = '';
        }
        return;
      }
      throw e;
    }
    if (id !== state.selected) return; // the user picked another meanwhile
    state.lastConversation = conv;
    renderMeta(conv);
    renderSignals(conv);
    const key = `${conv.id}|${JSON.stringify(conv.nodes)}`;
    if (key !== state.graphKey) {
      drawGraph(conv);
      state.graphKey = key;
    }
    renderDetail();
  }

  function renderMeta(conv) {
    const now = parseTime(conv.time);
    const counts = {};
    for (const n of conv.nodes) counts[n.state] = (counts[n.state] || 0) + 1;
    const parts = [`${conv.total_nodes} signal${conv.total_nodes === 1 ? '' : 's'}`];
    for (const st of Object.keys(STATE_LABEL)) {
      if (counts[st]) parts.push(`${counts[st]} ${STATE_LABEL[st]}`);
    }
    parts.push(`started ${ago(conv.started, now)}`);
    parts.push(`updated ${ago(conv.updated, now)}`);
    if (conv.truncated) parts.push(`only the first ${conv.nodes.length} drawn`);
    $('graph-title').textContent = shortId(conv.id);
    $('graph-title').title = conv.id;
    $('graph-meta').textContent = parts.join(' · ');
  }

  function drawMessage(text) {
    const g = $('graph');
    g.removeAttribute('data-conversation');
    delete g.dataset.naturalWidth;
    delete g.dataset.naturalHeight;
    g.setAttribute('width', 360);
    g.setAttribute('height', 80);
    g.setAttribute('viewBox', '0 0 360 80');
    g.replaceChildren(s('text', { class: 'graph-empty', x: MARGIN, y: 44, text }));
    $('signals').tBodies[0].replaceChildren();
    $('signals').hidden = true;
  }

  // renderSignals lists the drawn signals as a table: the same data as the
  // graph, with ages, readable at any size.
  function renderSignals(conv) {
    const now = parseTime(conv.time);
    const rows = conv.nodes.map((n) => h('tr', {
      'data-id': n.id,
      'data-state': n.state,
      class: n.id === state.selectedNode ? 'selected' : null,
    },
    h('td', {}, h('span', { class: 'state' }, h('span', { class: 'swatch', 'data-state': n.state }), STATE_LABEL[n.state] || n.state)),
    h('td', {}, h('strong', { text: n.type || '?' }), ` @${n.destination || '?'}`,
      n.reason ? h('div', { class: 'reason', text: n.reason }) : null),
    h('td', { class: 'mono', title: n.id, text: shortId(n.id) }),
    h('td', { class: 'mono', title: n.causation || '', text: n.causation ? shortId(n.causation) : '—' }),
    h('td', { class: 'num', text: ago(n.updated, now) }),
    h('td', { class: 'num', text: n.duplicates ? String(n.duplicates) : '' })));
    $('signals').tBodies[0].replaceChildren(...rows);
    $('signals').hidden = rows.length === 0;
  }

  // layout places signals in layers by depth (left to right) and as a tidy
  // tree within them: leaves take consecutive rows, a parent sits midway
  // between its first and last child, so no two boxes overlap.
  function layout(nodes) {
    const byId = new Map();
    for (const n of nodes) {
      const text = truncate(label(n), MAX_LABEL);
      const sub = `${STATE_LABEL[n.state] || n.state || 'unknown'} · ${shortId(n.id)}`;
      const w = Math.max(MIN_W, Math.ceil(Math.max(textWidth(text, 600), textWidth(sub, 400) * 0.85)) + 2 * PAD_X);
      byId.set(n.id, { n, text, sub, w, kids: [], depth: 0, row: 0, parent: null });
    }
    const roots = [];
    for (const v of byId.values()) {
      const p = v.n.causation ? byId.get(v.n.causation) : undefined;
      if (p && p !== v) {
        p.kids.push(v);
        v.parent = p;
      } else {
        roots.push(v);
      }
    }
    let nextRow = 0;
    const seen = new Set();
    const place = (v, depth) => {
      seen.add(v);
      v.depth = depth;
      const kids = v.kids.filter((k) => !seen.has(k));
      if (kids.length === 0) {
        v.row = nextRow++;
        return;
      }
      for (const k of kids) place(k, depth + 1);
      v.row = (kids[0].row + kids[kids.length - 1].row) / 2;
    };
    for (const r of roots) place(r, 0);
    // A cycle (impossible for causation, but drawn safely) is placed as roots.
    for (const v of byId.values()) if (!seen.has(v)) place(v, 0);

    const colW = [];
    for (const v of byId.values()) colW[v.depth] = Math.max(colW[v.depth] || 0, v.w);
    const colX = [];
    let x = MARGIN;
    for (let d = 0; d < colW.length; d++) {
      colX[d] = x;
      x += (colW[d] || 0) + COL_GAP;
    }
    for (const v of byId.values()) {
      v.x = colX[v.depth];
      v.y = MARGIN + 8 + v.row * ROW_H;
    }
    return {
      items: [...byId.values()],
      width: x - COL_GAP + MARGIN,
      height: MARGIN * 2 + 8 + Math.max(nextRow, 1) * ROW_H - (ROW_H - NODE_H),
    };
  }

  function arrow(id) {
    return s('marker', {
      id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
    }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z' }));
  }

  function drawGraph(conv) {
    const g = $('graph');
    if (conv.nodes.length === 0) {
      drawMessage('No signals recorded for this conversation.');
      return;
    }
    const { items, width, height } = layout(conv.nodes);
    const edges = s('g', { class: 'edges' });
    const nodes = s('g', { class: 'nodes' });
    for (const v of items) {
      if (!v.parent) continue;
      const p = v.parent;
      const x1 = p.x + p.w;
      const y1 = p.y + NODE_H / 2;
      const x2 = v.x - 2;
      const y2 = v.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      let cls = 'edge';
      let marker = 'arrow';
      if (v.n.state === 'in_flight') { cls += ' live'; marker = 'arrow-live'; }
      if (v.n.state === 'parked') { cls += ' parked'; marker = 'arrow-parked'; }
      edges.append(s('path', {
        class: cls,
        'data-from': p.n.id,
        'data-to': v.n.id,
        d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
        'marker-end': `url(#${marker})`,
      }));
    }
    for (const v of items) {
      const n = v.n;
      const tip = [label(n), `state: ${STATE_LABEL[n.state] || n.state}`, `id: ${n.id}`];
      if (n.duplicates) tip.push(`${n.duplicates} duplicate${n.duplicates === 1 ? '' : 's'} dropped`);
      if (n.reason) tip.push(`reason: ${n.reason}`);
      const at = truncate(label(n), MAX_LABEL);
      const cut = at.lastIndexOf(' @');
      const group = s('g', {
        class: n.id === state.selectedNode ? 'node selected' : 'node',
        'data-id': n.id,
        'data-state': n.state || 'unknown',
        'data-type': n.type,
        'data-destination': n.destination,
        transform: `translate(${v.x} ${v.y})`,
      },
      s('title', { text: tip.join('\n') }),
      s('rect', { class: 'halo', x: 0, y: 0, width: v.w, height: NODE_H, rx: 8 }),
      s('rect', { class: 'box', x: 0, y: 0, width: v.w, height: NODE_H, rx: 8 }),
      s('text', { class: 'label', x: PAD_X, y: 19 },
        s('tspan', { class: 'type', text: cut >= 0 ? at.slice(0, cut) : at }),
        cut >= 0 ? s('tspan', { class: 'dest', text: at.slice(cut) }) : null),
      s('text', { class: 'sub', x: PAD_X, y: 35, text: v.sub }));
      if (n.duplicates) {
        const text = `×${n.duplicates} dup`;
        const bw = Math.ceil(textWidth(text, 700) * 0.8) + 10;
        group.append(s('g', { class: 'dup-badge', transform: `translate(${v.w - bw + 6} -8)` },
          s('rect', { x: 0, y: 0, width: bw, height: 16, rx: 8 }),
          s('text', { x: bw / 2, y: 11.5, 'text-anchor': 'middle', text })));
      }
      nodes.append(group);
    }
    g.setAttribute('data-conversation', conv.id);
    g.dataset.naturalWidth = String(width);
    g.dataset.naturalHeight = String(height);
    g.setAttribute('viewBox', `0 0 ${width} ${height}`);
    g.replaceChildren(s('defs', {}, arrow('arrow'), arrow('arrow-live'), arrow('arrow-parked')), edges, nodes);
    fitGraph();
  }

  // fitGraph scales the drawn graph to the width of its panel.
  function fitGraph() {
    const g = $('graph');
    const width = Number(g.dataset.naturalWidth);
    const height = Number(g.dataset.naturalHeight);
    if (!width || !height || !g.hasAttribute('data-conversation')) return;
    const room = g.parentElement.clientWidth - 2;
    const scale = room > 0 ? Math.max(MIN_SCALE, Math.min(1, room / width)) : 1;
    g.setAttribute('width', Math.round(width * scale));
    g.setAttribute('height', Math.round(height * scale));
    g.dataset.scale = scale.toFixed(3);
  }

  function renderDetail() {
    const box = $('node-detail');
    const conv = state.lastConversation;
    const n = conv && state.selectedNode && conv.nodes.find((x) => x.id === state.selectedNode);
    if (!n) {
      box.hidden = true;
      return;
    }
    const now = parseTime(conv.time);
    const rows = [
      ['signal', label(n)],
      ['state', STATE_LABEL[n.state] || n.state],
      ['token id', n.id],
      ['caused by', n.causation || '— (root)'],
      ['created', ago(n.created, now)],
      ['last change', ago(n.updated, now)],
      ['duplicates', String(n.duplicates)],
    ];
    if (n.reason) rows.push(['parked because', n.reason]);
    const dl = h('dl');
    for (const [k, v] of rows) dl.append(h('dt', { text: k }), h('dd', { class: k === 'token id' || k === 'caused by' ? 'mono' : null, text: v }));
    box.replaceChildren(dl);
    box.hidden = false;
  }

  // ---- counters ----

  function renderStats(stats, tokens) {
    for (const e of document.querySelectorAll('.card .value[data-counter]')) {
      const name = e.dataset.counter;
      const v = stats.counters[name];
      if (v === undefined) {
        e.textContent = '—';
        delete e.dataset.value;
        continue;
      }
      e.dataset.value = String(v);
      e.textContent = name === OUTBOX_AGE ? fmtAge(v) : fmtInt(v);
      if (name === PARKED) e.dataset.alert = String(v > 0);
    }
    const inFlight = $('stat-in-flight');
    inFlight.dataset.value = String(stats.conversations.in_flight);
    inFlight.textContent = fmtInt(stats.conversations.in_flight);
    // The recorder is bounded: say what its limits left out.
    $('conversations-count').title = `${fmtInt(stats.conversations.evicted || 0)} conversations evicted (finished ones first), `
      + `${fmtInt(stats.conversations.dropped || 0)} signal events dropped from full conversations`;

    const live = $('stat-live-tokens');
    if (tokens.available) {
      let total = 0;
      let capped = false;
      for (const d of tokens.destinations) {
        total += d.count;
        capped = capped || d.capped;
      }
      live.dataset.value = String(total);
      live.textContent = fmtInt(total) + (capped ? '+' : '');
    } else {
      live.textContent = '—';
      delete live.dataset.value;
    }

    const rows = Object.keys(stats.counters).sort().map((name) => h('tr', {
      'data-counter': name,
      id: `counter-${name.replace(/[^A-Za-z0-9]+/g, '-')}`,
    }, h('td', { class: 'mono', text: name }), h('td', { class: 'num', text: fmtInt(stats.counters[name]) })));
    if (rows.length === 0) rows.push(h('tr', {}, h('td', { class: 'muted', text: 'No counters supplied.' })));
    $('counters').tBodies[0].replaceChildren(...rows);
  }

  // ---- live tokens, stuck and parked signals ----

  function renderTokens(tokens) {
    const now = parseTime(tokens.time);
    const body = $('tokens').tBodies[0];
    const empty = $('tokens-empty');
    if (!tokens.available) {
      body.replaceChildren();
      empty.textContent = 'No token store configured.';
      empty.hidden = false;
    } else {
      const rows = [];
      for (const d of tokens.destinations) {
        const bar = h('div', { class: 'bar', title: tokens.buckets.map((b, i) => `${b}: ${d.ages[i]}`).join('  ') });
        d.ages.forEach((count, i) => {
          if (!count) return;
          const seg = h('span', { 'data-bucket': i });
          seg.style.width = `${(100 * count) / Math.max(d.count, 1)}%`;
          bar.append(seg);
        });
        rows.push(h('tr', { 'data-destination': d.destination, 'data-count': d.count },
          h('td', { class: 'dest', text: d.destination }),
          h('td', { class: 'num count', text: fmtInt(d.count) + (d.capped ? '+' : '') }),
          h('td', {}, bar),
          h('td', { class: 'num', text: d.count ? fmtAge(d.oldest_ms) : '—' }),
          h('td', { class: 'num stuck', 'data-stuck': d.stuck > 0, title: `live longer than ${fmtAge(d.stuck_after_ms)}`, text: fmtInt(d.stuck) })));
        if (d.error) rows.push(h('tr', {}, h('td', { class: 'error', colspan: 5, text: d.error })));
      }
      body.replaceChildren(...rows);
      empty.textContent = 'No destinations seen yet.';
      empty.hidden = tokens.destinations.length > 0;
    }
    const legendKey = tokens.buckets.join('|');
    if (legendKey !== state.ageLegend) {
      $('age-legend').replaceChildren(...tokens.buckets.map((b, i) => h('li', {},
        h('span', { class: 'swatch', 'data-bucket': i }), b)));
      state.ageLegend = legendKey;
    }

    $('stuck-after').textContent = `stuck after ${fmtAge(tokens.stuck_after_ms)}`;
    $('stuck').replaceChildren(...tokens.oldest.map((t) => h('li', {
      'data-id': t.id, 'data-conversation': t.conversation, 'data-stuck': t.stuck, title: `token ${t.id}`,
    },
    h('span', { class: 'what', text: label(t) }),
    h('span', { class: 'age', text: fmtAge(t.age_ms) }),
    h('span', { class: 'id mono', text: `conversation ${shortId(t.conversation)}${t.stuck ? ' · stuck' : ''}` }))));
    $('stuck-empty').hidden = tokens.oldest.length > 0;
    $('stuck-empty').textContent = tokens.available ? 'No live tokens.' : 'No token store configured.';

    $('parked-count').textContent = fmtInt(tokens.parked.length);
    $('parked').replaceChildren(...tokens.parked.map((p) => h('li', {
      'data-id': p.id, 'data-conversation': p.conversation, title: `token ${p.id}`,
    },
    h('span', { class: 'what', text: label(p) }),
    h('span', { class: 'age', text: ago(p.since, now) }),
    h('span', { class: 'why', text: p.reason || 'no reason given' }))));
    $('parked-empty').hidden = tokens.parked.length > 0;
  }

  // ---- parked in the broker: list, replay, discard ----

  function renderBroker(b) {
    const panel = $('broker-panel');
    panel.hidden = !b.available;
    if (!b.available) return;
    $('operate').hidden = !b.actions;
    $('broker-count').textContent = fmtInt(b.signals.length);
    const now = parseTime(b.time);
    // Rows are rebuilt only when the signals change, so that a button is
    // not replaced under the operator's pointer; otherwise only ages move.
    const key = JSON.stringify([b.actions, b.signals.map((p) => [p.id, p.reason, p.attempts])]);
    if (key !== state.brokerKey) {
      state.brokerKey = key;
      $('broker-parked').replaceChildren(...b.signals.map((p) => h('li', {
        'data-parked-id': p.id, 'data-conversation': p.conversation, title: `token ${p.token}`,
      },
      h('span', { class: 'what', text: label(p) }),
      h('span', { class: 'age', 'data-parked-at': p.parked_at, text: ago(p.parked_at, now) }),
      h('span', { class: 'why', text: `${p.reason || 'no reason given'} (after ${p.attempts} deliveries)` }),
      h('span', { class: 'id mono', text: `conversation ${shortId(p.conversation)} · token ${shortId(p.token)}` }),
      b.actions ? h('span', { class: 'actions' },
        h('button', { type: 'button', class: 'replay', 'data-action': 'replay', text: 'Replay' }),
        h('button', { type: 'button', class: 'discard', 'data-action': 'discard', text: 'Discard' })) : null)));
    } else {
      for (const age of $('broker-parked').querySelectorAll('.age[data-parked-at]')) {
        age.textContent = ago(age.dataset.parkedAt, now);
      }
    }
    $('broker-empty').hidden = b.signals.length > 0;
    $('broker-errors').hidden = b.errors.length === 0;
    $('broker-errors').textContent = b.errors.join('; ');
  }

  function actionStatus(ok, text) {
    const line = $('action-status');
    line.dataset.ok = String(ok);
    line.textContent = text;
  }

  async function act(action, id, button) {
    const body = { id };
    if (action === 'discard') {
      body.why = $('discard-why').value.trim();
      if (!body.why) {
        actionStatus(false, 'Say why in "Why (for discards)": the reason is recorded with your name.');
        $('discard-why').focus();
        return;
      }
    }
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    const key = $('operator-key').value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    button.disabled = true;
    try {
      const res = await fetch(`api/parked/${action}`, { method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store' });
      let answer = {};
      try { answer = await res.json(); } catch (_) { /* not JSON */ }
      if (!res.ok) {
        const why = answer.error || answer.detail || res.statusText;
        actionStatus(false, res.status === 401 ? `Not allowed: ${why}. Enter the key of a system with operate.` : `${action} failed: ${why}`);
        return;
      }
      const done = action === 'replay'
        ? `Replayed ${answer.type} to ${answer.destination} (token ${shortId(answer.token)}), as ${answer.operator}.`
        : `Discarded ${answer.type} to ${answer.destination} as ${answer.operator}: ${answer.token_retired ? 'token retired' : 'its token was already gone'}.`;
      actionStatus(true, done);
      await refreshBroker();
    } catch (e) {
      actionStatus(false, `${action} failed: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function refreshBroker() {
    try {
      renderBroker(await getJSON('api/parked'));
    } catch (e) {
      console.warn('baton dashboard:', e.message);
    }
  }

  async function brokerLoop() {
    try {
      await refreshBroker();
    } finally {
      setTimeout(brokerLoop, BROKER_MS);
    }
  }

  // ---- report ----

  async function refreshReport() {
    const panel = $('report-panel');
    let body;
    try {
      body = await getJSON('api/report');
    } catch (e) {
      if (e.status === 404) panel.hidden = true;
      return;
    }
    panel.hidden = false;
    const report = body.report;
    const verdict = $('report-verdict');
    verdict.hidden = true;
    if (report === null || report === undefined) {
      $('report').textContent = 'Not available yet.';
      return;
    }
    if (typeof report === 'object') {
      for (const key of ['ok', 'passed', 'pass', 'success']) {
        if (typeof report[key] === 'boolean') {
          verdict.hidden = false;
          verdict.dataset.verdict = report[key] ? 'pass' : 'fail';
          verdict.textContent = report[key] ? 'PASS' : 'FAIL';
          break;
        }
      }
    }
    $('report').textContent = truncate(JSON.stringify(report, null, 2), 20000);
  }

  // ---- polling ----

  function setLive(ok, time) {
    $('live').dataset.live = ok ? 'live' : 'down';
    $('live-text').textContent = ok ? 'live' : 'disconnected — retrying';
    if (ok && time) $('updated').textContent = `updated ${new Date(parseTime(time)).toLocaleTimeString()}`;
  }

  async function tick() {
    try {
      const [list, stats, tokens] = await Promise.all([
        getJSON(`api/conversations?limit=${LIST_LIMIT}`),
        getJSON('api/stats'),
        getJSON('api/tokens'),
      ]);
      renderList(list);
      renderStats(stats, tokens);
      renderTokens(tokens);
      await refreshGraph();
      setLive(true, stats.time);
      document.body.dataset.ready = 'true';
    } catch (e) {
      setLive(false);
      console.warn('baton dashboard:', e.message);
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  async function reportLoop() {
    try {
      await refreshReport();
    } finally {
      setTimeout(reportLoop, REPORT_MS);
    }
  }

  function start() {
    const fromHash = location.hash.slice(1);
    if (/^[0-9a-f]{32}$/.test(fromHash)) state.selected = fromHash;
    drawMessage('Loading…');

    $('conversations').addEventListener('click', (ev) => {
      const li = ev.target.closest('li[data-id]');
      if (li) select(li.dataset.id);
    });
    $('operate').addEventListener('submit', (ev) => ev.preventDefault());
    $('broker-parked').addEventListener('click', (ev) => {
      const button = ev.target.closest('button[data-action]');
      const li = ev.target.closest('li[data-parked-id]');
      if (button && li) act(button.dataset.action, li.dataset.parkedId, button);
      else if (li) select(li.dataset.conversation);
    });
    for (const id of ['stuck', 'parked']) {
      $(id).addEventListener('click', (ev) => {
        const li = ev.target.closest('li[data-conversation]');
        if (li) select(li.dataset.conversation);
      });
    }
    const pickNode = (id) => {
      state.selectedNode = id;
      for (const n of $('graph').querySelectorAll('g.node')) {
        n.classList.toggle('selected', n.dataset.id === id);
      }
      for (const tr of $('signals').querySelectorAll('tr[data-id]')) {
        tr.classList.toggle('selected', tr.dataset.id === id);
      }
      renderDetail();
    };
    $('graph').addEventListener('click', (ev) => {
      const g = ev.target.closest('g.node');
      pickNode(g ? g.dataset.id : null);
    });
    $('signals').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-id]');
      if (tr) pickNode(tr.dataset.id === state.selectedNode ? null : tr.dataset.id);
    });
    window.addEventListener('resize', fitGraph);
    // A link to #<conversation id> opens that conversation, also from this page.
    window.addEventListener('hashchange', () => {
      const id = location.hash.slice(1);
      if (/^[0-9a-f]{32}$/.test(id)) select(id);
    });
    tick();
    reportLoop();
    brokerLoop();
  }

  start();
})();
