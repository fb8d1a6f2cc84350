// The replay viewer: draws a simulator run (replay-model.js) in the manner
// of RaftScope -- nodes on a circle with their election timers, messages as
// moving dots, each node's log as coloured terms -- with a scrubber, play,
// pause, step and the checker's verdict.
//
// Two ways in: a trace inlined in the page (<script type="application/json"
// id="trace-data">, the file `liferaft sim view` writes), or the #trace-file
// picker of /ui/replay.html (read with FileReader: nothing is uploaded).
// Plain script, no build step, no libraries; it runs from file:// and under
// the console's Content-Security-Policy (no inline script, no eval).
'use strict';

(function () {
  const M = window.LiferaftReplay;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const RING = { cx: 230, cy: 230, r: 165 };
  const LOG_CELLS = 40; // log indices shown at once (the newest ones)

  const $ = (id) => document.getElementById(id);
  let NODE_R = 34; // shrunk in build() when many nodes share the ring

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  }

  function html(tag, cls, text, parent) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined && text !== null) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  // A term's colour: spread around the hue circle so neighbouring terms differ.
  function termColour(term) {
    if (term === null || term < 0) return '#d8d8d8';
    return 'hsl(' + ((term * 67) % 360) + ', 62%, 68%)';
  }

  // The arc of an election timer: `fraction` of a full turn, clockwise from the top.
  function arcPath(cx, cy, r, fraction) {
    if (fraction >= 0.9999) {
      return 'M ' + cx + ' ' + (cy - r) + ' A ' + r + ' ' + r + ' 0 1 1 ' + cx + ' ' + (cy + r) +
             ' A ' + r + ' ' + r + ' 0 1 1 ' + cx + ' ' + (cy - r);
    }
    const a = fraction * 2 * Math.PI;
    const x = cx + r * Math.sin(a), y = cy - r * Math.cos(a);
    return 'M ' + cx + ' ' + (cy - r) + ' A ' + r + ' ' + r + ' 0 ' + (fraction > 0.5 ? 1 : 0) +
           ' 1 ' + x.toFixed(2) + ' ' + y.toFixed(2);
  }

  // The log index a checker message names ("entry 15", "entry (15, 7)",
  // "index 15"), or null: drawn outlined in every log, so the entry the
  // violation is about can be followed back through the run.
  function namedIndex(message) {
    const m = /\b(?:entry|index) \(?(\d+)\b/.exec(message || '');
    return m ? Number(m[1]) : null;
  }

  // One line of text for an event (shown under the stage while stepping).
  function describe(ev, replay) {
    const extra = (o, skip) => Object.keys(o).filter((k) => !skip.includes(k))
      .map((k) => k + ' ' + JSON.stringify(o[k])).join(', ');
    switch (ev.k) {
      case 'send':
        return ev.from + ' \u2192 ' + ev.to + ' ' + ev.type + ' (term ' + ev.term + ')' +
          (extra(ev, ['t', 'k', 'id', 'from', 'to', 'type', 'term']) ?
            ': ' + extra(ev, ['t', 'k', 'id', 'from', 'to', 'type', 'term']) : '');
      case 'deliver': case 'drop': case 'dup': {
        const m = replay.msg(ev.id);
        const what = m ? m.type + ' ' + m.from + ' \u2192 ' + m.to : 'message ' + ev.id;
        if (ev.k === 'deliver') return 'delivered ' + what;
        if (ev.k === 'drop') return 'dropped ' + what + ' (' + (ev.why || '?') + ')';
        return 'duplicated ' + what;
      }
      case 'role':
        return ev.node + ' is ' + ev.role + ' in term ' + ev.term +
          (ev.leader ? ', leader ' + ev.leader : '') + (ev.vote ? ', voted for ' + ev.vote : '');
      case 'timer': return ev.node + ' election timer set to fire at t=' + ev.deadline;
      case 'append':
        return ev.node + ' appended ' + (ev.terms || []).length + ' entries at index ' + ev.index;
      case 'truncate': return ev.node + ' cut its log from index ' + ev.index;
      case 'commit': return ev.node + ' committed up to ' + ev.index;
      case 'snapshot': return ev.node + ' snapshot at ' + ev.index + ' (term ' + ev.term + ')';
      case 'crash': return ev.node + ' crashed';
      case 'restart': return ev.node + ' restarted';
      case 'net':
        return ev.groups ? 'network: ' + ev.groups.map((g) => '{' + g.join(' ') + '}').join(' ')
          : 'network: cut ' + (ev.cut || []).map((p) => p.join('-')).join(' ');
      case 'conf':
        return ev.node + ' configuration: voters ' + (ev.voters || []).join(' ') +
          ((ev.learners || []).length ? ', learners ' + ev.learners.join(' ') : '');
      case 'violation': return 'VIOLATION: ' + ev.message;
      case 'liveness': return 'liveness failure: ' + ev.message;
      default: return ev.k + ' ' + extra(ev, ['t', 'k']);
    }
  }

  class Viewer {
    constructor(replay) {
      this.replay = replay;
      this.state = null;
      this.time = 0;       // current sim time (between events while playing)
      this.playing = false;
      this.lastFrame = null;
      this.drawnIndex = null;
      this.build();
      this.seek(0);
    }

    // ----- layout, built once per trace -----

    build() {
      const r = this.replay, stage = $('stage');
      stage.textContent = '';
      stage.setAttribute('viewBox', '0 0 460 460');
      svg('circle', { class: 'ring', cx: RING.cx, cy: RING.cy, r: RING.r }, stage);
      this.pos = new Map();
      const n = r.nodeIds.length;
      // Neighbours (timer arcs included) must not overlap on the ring.
      NODE_R = Math.max(12, Math.min(34, 0.8 * Math.PI * RING.r / Math.max(n, 1) - 6));
      r.nodeIds.forEach((id, k) => {
        const a = 2 * Math.PI * k / n;
        this.pos.set(id, { x: RING.cx + RING.r * Math.sin(a), y: RING.cy - RING.r * Math.cos(a) });
      });
      this.linkLayer = svg('g', { class: 'links' }, stage);
      this.links = [];
      for (let a = 0; a < n; a++) {
        for (let b = a + 1; b < n; b++) {
          const pa = this.pos.get(r.nodeIds[a]), pb = this.pos.get(r.nodeIds[b]);
          const line = svg('line', { class: 'link', x1: pa.x, y1: pa.y, x2: pb.x, y2: pb.y,
            'data-a': r.nodeIds[a], 'data-b': r.nodeIds[b] }, this.linkLayer);
          this.links.push({ a: r.nodeIds[a], b: r.nodeIds[b], el: line });
        }
      }
      this.nodeEls = new Map();
      const nodeLayer = svg('g', { class: 'nodes' }, stage);
      r.nodeIds.forEach((id) => {
        const p = this.pos.get(id);
        const g = svg('g', { class: 'node', 'data-id': id }, nodeLayer);
        svg('circle', { class: 'timer-track', cx: p.x, cy: p.y, r: NODE_R + 6 }, g);
        const timer = svg('path', { class: 'timer', d: '' }, g);
        const body = svg('circle', { class: 'body', cx: p.x, cy: p.y, r: NODE_R }, g);
        const name = svg('text', { class: 'name', x: p.x, y: p.y - 4 }, g);
        name.textContent = id;
        const term = svg('text', { class: 'term', x: p.x, y: p.y + 14 }, g);
        const title = svg('title', {}, g);
        this.nodeEls.set(id, { g, timer, body, term, title });
      });
      this.msgLayer = svg('g', { class: 'messages' }, stage);

      // The logs: one row per node, built once; cells are refilled per event.
      const logs = $('logs');
      logs.textContent = '';
      const head = html('div', 'log-row log-head', null, logs);
      html('span', 'log-name', '', head);
      html('span', 'log-info', 'commit / last', head);
      this.headCells = [];
      for (let c = 0; c < LOG_CELLS; c++) this.headCells.push(html('span', 'log-index', '', head));
      this.logRows = new Map();
      r.nodeIds.forEach((id) => {
        const row = html('div', 'log-row', null, logs);
        row.dataset.id = id;
        html('span', 'log-name', id, row);
        const info = html('span', 'log-info', '', row);
        const cells = [];
        for (let c = 0; c < LOG_CELLS; c++) cells.push(html('span', 'cell', '', row));
        this.logRows.set(id, { row, cells, info });
      });

      const scrub = $('scrubber');
      scrub.min = '0';
      scrub.max = String(Math.max(0, r.events.length - 1));
      $('event-count').textContent = String(r.events.length);
      this.buildHeader();
      this.buildVerdict();
    }

    buildHeader() {
      const t = this.replay.trace;
      const parts = ['seed ' + t.seed, t.nodes + ' nodes', (t.steps || '?') + ' steps',
        'profile ' + (t.profile || 'mixed'), 'bug ' + (t.bug || 'none'),
        this.replay.events.length + ' events'];
      $('run-info').textContent = parts.join(' \u00b7 ');
      $('run-command').textContent = t.command || '';
      $('truncated').hidden = !t.truncated;
    }

    buildVerdict() {
      const r = this.replay, v = r.verdict();
      $('verdict-ok').hidden = !(v.ok && !v.violation && !v.liveness);
      this.named = namedIndex(v.violation);
      const vio = $('violation');
      vio.hidden = !v.violation;
      $('violation-message').textContent = v.violation || '';
      $('jump-violation').disabled = r.violationEvent === null;
      $('liveness').hidden = !v.liveness;
      $('liveness-message').textContent = v.liveness || '';
      const mark = $('violation-mark');
      if (r.violationEvent !== null && r.events.length > 1) {
        mark.hidden = false;
        mark.style.left = (100 * r.violationEvent / (r.events.length - 1)) + '%';
      } else {
        mark.hidden = true;
      }
    }

    // ----- moving through the run -----

    /** Show the state after event i, at that event's time. */
    seek(i) {
      const events = this.replay.events;
      if (!events.length) { this.state = this.replay.stateAt(-1); this.time = 0; this.draw(); return; }
      i = Math.max(0, Math.min(i, events.length - 1));
      if (this.state && this.state.i <= i && i - this.state.i <= M.CHECKPOINT_EVERY) {
        for (let j = this.state.i + 1; j <= i; j++) this.state.apply(events[j], j);
      } else {
        this.state = this.replay.stateAt(i);
      }
      this.time = events[i].t;
      this.draw();
    }

    step(delta) {
      this.pause();
      this.seek(this.state.i + delta);
    }

    jumpToViolation() {
      if (this.replay.violationEvent === null) return;
      this.pause();
      this.seek(this.replay.violationEvent);
    }

    play() {
      if (this.playing) return;
      const events = this.replay.events;
      if (this.state.i >= events.length - 1) this.seek(0); // at the end: from the start
      this.playing = true;
      this.lastFrame = null;
      $('play').disabled = true;
      $('pause').disabled = false;
      requestAnimationFrame((ts) => this.frame(ts));
    }

    pause() {
      this.playing = false;
      $('play').disabled = false;
      $('pause').disabled = true;
    }

    // Sim time runs at the chosen speed (sim ms per real second); events
    // are applied as the clock passes them.
    frame(ts) {
      if (!this.playing) return;
      const events = this.replay.events;
      if (this.lastFrame !== null) {
        const speed = Number($('speed').value) || 20;
        this.time += Math.min(ts - this.lastFrame, 250) * speed / 1000;
      }
      this.lastFrame = ts;
      let i = this.state.i;
      // Bounded per frame, so a burst of events at one instant cannot stall a frame.
      let budget = 5000;
      while (i + 1 < events.length && events[i + 1].t <= this.time && budget-- > 0) {
        i += 1;
        this.state.apply(events[i], i);
      }
      if (i >= events.length - 1) {
        this.time = events.length ? events[events.length - 1].t : 0;
        this.draw();
        this.pause();
        return;
      }
      this.draw();
      requestAnimationFrame((t) => this.frame(t));
    }

    // ----- drawing -----

    draw() {
      const s = this.state, r = this.replay;
      $('time').textContent = 't=' + Math.floor(this.time);
      $('event-index').textContent = String(Math.max(s.i, 0));
      $('scrubber').value = String(Math.max(s.i, 0));
      this.drawNodes();
      this.drawMessages();
      if (this.drawnIndex !== s.i) {
        this.drawnIndex = s.i;
        this.drawLinks();
        this.drawLogs();
        const ev = s.i >= 0 ? r.events[s.i] : null;
        const line = $('event-text');
        line.textContent = ev ? '#' + s.i + ' t=' + ev.t + ' ' + describe(ev, r) : '';
        line.classList.toggle('is-violation', !!ev && ev.k === 'violation');
      }
    }

    drawNodes() {
      const s = this.state;
      this.nodeEls.forEach((el, id) => {
        const n = s.nodes.get(id);
        const p = this.pos.get(id);
        el.g.setAttribute('data-role', n.role);
        el.g.setAttribute('data-term', String(n.term));
        el.g.setAttribute('data-crashed', n.crashed ? 'true' : 'false');
        el.g.setAttribute('data-absent', n.seen ? 'false' : 'true');
        el.term.textContent = 'term ' + n.term;
        let fraction = 0;
        if (!n.crashed && n.role !== 'leader' && n.timerDeadline !== null) {
          const span = n.timerDeadline - n.timerSet;
          fraction = span > 0 ? (n.timerDeadline - this.time) / span : 0;
          fraction = Math.max(0, Math.min(1, fraction));
        }
        el.timer.setAttribute('d', fraction > 0 ? arcPath(p.x, p.y, NODE_R + 6, fraction) : '');
        el.title.textContent = id + ': ' + (!n.seen ? 'not started yet' :
          (n.crashed ? 'crashed, ' : '') + n.role) +
          ', term ' + n.term + (n.leader ? ', leader ' + n.leader : '') +
          (n.vote ? ', voted for ' + n.vote : '') +
          (n.timerDeadline !== null ? ', election timer fires at t=' + n.timerDeadline : '');
      });
    }

    // A point `f` of the way from a's edge to b's edge.
    along(a, b, f) {
      const pa = this.pos.get(a), pb = this.pos.get(b);
      if (!pa || !pb) return null;
      const dx = pb.x - pa.x, dy = pb.y - pa.y, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len, usable = Math.max(0, len - 2 * NODE_R);
      return { x: pa.x + ux * (NODE_R + usable * f), y: pa.y + uy * (NODE_R + usable * f) };
    }

    drawMessages() {
      const s = this.state, r = this.replay, layer = this.msgLayer, t = this.time;
      layer.textContent = '';
      const kind = (type) => (/Vote/.test(type) ? 'vote' : /Append|Heartbeat|Snapshot/.test(type)
        ? 'append' : 'other') + (/Response$/.test(type || '') ? ' response' : '');
      s.flight.forEach((id) => {
        const m = r.msg(id);
        if (!m) return;
        const end = m.t1 === null ? r.endTime : m.t1;
        const f = end > m.t0 ? Math.max(0, Math.min(1, (t - m.t0) / (end - m.t0))) : 0.5;
        const p = this.along(m.from, m.to, f);
        if (!p) return;
        const c = svg('circle', { class: 'msg ' + kind(m.type), cx: p.x.toFixed(1),
          cy: p.y.toFixed(1), r: 7, 'data-id': String(id), 'data-type': m.type }, layer);
        svg('title', {}, c).textContent = m.type + ' ' + m.from + ' \u2192 ' + m.to +
          ' (term ' + m.term + ')';
      });
      // Dropped messages: a crossed-out dot, fading, where the message was lost.
      s.drops.forEach((d) => {
        const m = r.msg(d.id);
        if (!m) return;
        const age = t - d.t;
        if (age < 0 || age > M.DROP_FADE_MS) return;
        const p = this.along(m.from, m.to, d.t > m.t0 ? 0.5 : 0.2);
        if (!p) return;
        const g = svg('g', { class: 'dropped', opacity: (1 - age / M.DROP_FADE_MS).toFixed(2) },
          layer);
        svg('circle', { class: 'msg dropped ' + kind(m.type), cx: p.x, cy: p.y, r: 7,
          'data-id': String(d.id) }, g);
        svg('path', { class: 'cross', d: 'M ' + (p.x - 7) + ' ' + (p.y - 7) + ' L ' + (p.x + 7) +
          ' ' + (p.y + 7) + ' M ' + (p.x + 7) + ' ' + (p.y - 7) + ' L ' + (p.x - 7) + ' ' +
          (p.y + 7) }, g);
        svg('title', {}, g).textContent = m.type + ' ' + m.from + ' \u2192 ' + m.to +
          ' dropped (' + (m.why || '?') + ')';
      });
    }

    drawLinks() {
      const s = this.state;
      this.links.forEach((l) => {
        const present = s.nodes.get(l.a).seen && s.nodes.get(l.b).seen;
        l.el.classList.toggle('absent', !present);
        l.el.classList.toggle('cut', present && s.isCut(l.a, l.b));
      });
    }

    drawLogs() {
      const s = this.state;
      // The window ends just past what matters: the highest commit point and
      // the live nodes' log ends.  A crashed or cut-off node's long
      // uncommitted tail would otherwise push every commit point out of view.
      let maxLast = 0, focus = 0;
      s.nodes.forEach((n) => {
        maxLast = Math.max(maxLast, n.last);
        focus = Math.max(focus, n.commit, n.crashed ? 0 : n.last);
      });
      const hi = Math.min(maxLast, focus + 4);
      const lo = Math.max(1, hi - LOG_CELLS + 1);
      this.headCells.forEach((c, k) => {
        const idx = lo + k;
        // Every fifth index, and the first one unless a label sits right next to it.
        const labelled = idx % 5 === 0 || (idx === lo && idx % 5 !== 4);
        c.textContent = idx <= hi && (labelled || idx === this.named) ? String(idx) : '';
        c.className = 'log-index' + (idx === this.named ? ' named' : '');
      });
      this.logRows.forEach((row, id) => {
        const n = s.nodes.get(id);
        row.row.classList.toggle('crashed', n.crashed);
        const terms = M.termsIn(n, lo, lo + LOG_CELLS - 1);
        row.cells.forEach((c, k) => {
          const idx = lo + k;
          const term = terms[k];
          let cls = 'cell';
          if (term === null) {
            cls += ' empty';
            c.textContent = '';
            c.style.background = '';
          } else {
            cls += idx <= n.commit ? ' committed' : ' uncommitted';
            if (idx <= n.snap) cls += ' snap';
            c.textContent = term < 0 ? '?' : String(term);
            c.style.background = termColour(term);
          }
          if (idx === n.commit) cls += ' commit-point';
          if (idx === this.named && term !== null) cls += ' named';
          c.className = cls;
          c.title = term === null ? '' : 'index ' + idx + ', term ' + (term < 0 ? '?' : term) +
            (idx <= n.commit ? ', committed' : '');
        });
        row.info.textContent = n.commit + ' / ' + n.last;
        row.info.title = 'commit ' + n.commit + ', last ' + n.last +
          (n.snap ? ', snapshot up to ' + n.snap : '');
        row.row.dataset.commit = String(n.commit);
        row.row.dataset.last = String(n.last);
      });
    }
  }

  // ----- loading -----

  let viewer = null;

  function showError(message) {
    const el = $('load-error');
    el.textContent = message;
    el.hidden = !message;
  }

  /** Parse and show a trace given as JSON text; returns the viewer. */
  function load(text, source) {
    const t0 = performance.now();
    let trace;
    try {
      trace = JSON.parse(text);
    } catch (e) {
      throw new M.TraceFormatError((source || 'the file') + ' is not JSON: ' + e.message);
    }
    const t1 = performance.now();
    const replay = new M.Replay(trace);
    const t2 = performance.now();
    if (viewer) viewer.pause();
    viewer = new Viewer(replay);
    if (replay.violationEvent !== null) viewer.seek(replay.violationEvent);
    const t3 = performance.now();
    $('viewer').hidden = false;
    viewer.stats = { parseMs: t1 - t0, indexMs: t2 - t1, drawMs: t3 - t2,
      events: replay.events.length, messages: replay.sendAt.size, bytes: text.length };
    window.liferaftReplay.viewer = viewer;
    return viewer;
  }

  function readPicked(input) {
    const file = input.files && input.files[0];
    if (!file) return;
    showError('');
    const status = $('load-status');
    status.textContent = 'reading ' + file.name + ' (' + (file.size / 1e6).toFixed(1) + ' MB)\u2026';
    const reader = new FileReader();
    reader.onerror = () => { status.textContent = ''; showError('cannot read ' + file.name); };
    reader.onload = () => {
      status.textContent = 'loading ' + file.name + '\u2026';
      // Let the status paint before the synchronous parse.
      setTimeout(() => {
        try {
          load(reader.result, file.name);
          status.textContent = file.name;
        } catch (e) {
          status.textContent = '';
          showError(e instanceof M.TraceFormatError ? e.message : 'cannot show this trace: ' + e);
        }
      }, 0);
    };
    reader.readAsText(file);
  }

  function wire() {
    const on = (id, ev, fn) => { const el = $(id); if (el) el.addEventListener(ev, fn); };
    on('play', 'click', () => viewer && viewer.play());
    on('pause', 'click', () => viewer && viewer.pause());
    on('step', 'click', () => viewer && viewer.step(1));
    on('step-back', 'click', () => viewer && viewer.step(-1));
    on('jump-violation', 'click', () => viewer && viewer.jumpToViolation());
    on('scrubber', 'input', (e) => {
      if (!viewer) return;
      viewer.pause();
      viewer.seek(Number(e.target.value));
    });
    on('trace-file', 'change', (e) => readPicked(e.target));
    document.addEventListener('keydown', (e) => {
      if (!viewer || e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
      if (e.key === ' ') { e.preventDefault(); if (viewer.playing) viewer.pause(); else viewer.play(); }
      else if (e.key === 'ArrowRight') viewer.step(1);
      else if (e.key === 'ArrowLeft') viewer.step(-1);
    });
    const inline = $('trace-data');
    if (inline) {
      try {
        load(inline.textContent, 'the inlined trace');
      } catch (e) {
        showError(e instanceof M.TraceFormatError ? e.message : 'cannot show this trace: ' + e);
      }
    }
  }

  window.liferaftReplay = { load: (text) => load(text, 'the text'), viewer: null };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
})();
