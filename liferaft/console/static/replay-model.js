// The replay viewer's model: a simulator trace (docs/simulator.md, trace
// format version 1) turned into "the cluster as it was after event i".
//
// No DOM here.  The state after event i is computed by replaying events
// 0..i; a copy of the derived state is kept every CHECKPOINT_EVERY events,
// so seeking anywhere replays at most that many events (a 50 MB trace has
// about a million events: replaying from 0 on every scrub would freeze the
// tab).  Logs are kept run-length encoded by term (a Raft log's terms never
// decrease along the log) as an immutable list linked from its last run:
// appends and truncations only touch the tail, so a checkpoint shares the
// list instead of copying it (copying every run into every checkpoint made
// loading a large trace mostly garbage collection).
'use strict';

(function (root) {
  const CHECKPOINT_EVERY = 500;
  // How long (sim ms) a dropped message stays on screen, fading out.
  const DROP_FADE_MS = 40;
  // The most nodes drawn: the stage draws a link per pair of nodes, so a
  // file naming thousands would freeze the tab building them.
  const MAX_NODES = 100;
  // Log indices and terms must be integers well inside a double's exact
  // range: the log is walked one index at a time near its end, and past
  // 2^53 an index + 1 is the same index (a loop over it never ends).
  const MAX_INDEX = 2 ** 52;

  class TraceFormatError extends Error {}

  /** Throw TraceFormatError unless `trace` looks like a version 1 trace. */
  function checkTrace(trace) {
    const bad = (why) => { throw new TraceFormatError(why); };
    if (!trace || typeof trace !== 'object' || Array.isArray(trace)) {
      bad('not a liferaft simulator trace: the file is not a JSON object');
    }
    if (trace.format !== 'liferaft-sim-trace') {
      bad('not a liferaft simulator trace (format is ' + JSON.stringify(trace.format) + ')');
    }
    if (trace.version !== 1) {
      bad('trace version ' + JSON.stringify(trace.version) +
          ' is not supported: this viewer reads version 1');
    }
    if (!Array.isArray(trace.events)) bad('the trace has no "events" list');
    if (!Array.isArray(trace.node_ids)) bad('the trace has no "node_ids" list');
    if (trace.node_ids.length > MAX_NODES) {
      bad('the trace has ' + trace.node_ids.length + ' nodes; this viewer draws at most ' +
          MAX_NODES);
    }
  }

  const isCount = (v, min) => Number.isSafeInteger(v) && v >= min && v <= MAX_INDEX;

  /** Throw TraceFormatError unless the fields this viewer computes with
   * have the types contract A gives them (a hostile or damaged file must be
   * refused, not walked index by index or crash half-drawn). */
  function checkEvent(ev, i) {
    const bad = (why) => { throw new TraceFormatError('event ' + i + ' (' + ev.k + '): ' + why); };
    switch (ev.k) {
      case 'append':
        if (!isCount(ev.index, 1)) bad('"index" is not an integer from 1 to 2^52');
        if (!Array.isArray(ev.terms) || !ev.terms.every((t) => isCount(t, 0))) {
          bad('"terms" is not a list of integer terms');
        }
        if (ev.index + ev.terms.length > MAX_INDEX) bad('the log passes index 2^52');
        break;
      case 'truncate': if (!isCount(ev.index, 1)) bad('"index" is not an integer from 1 to 2^52'); break;
      case 'commit': if (!isCount(ev.index, 0)) bad('"index" is not an integer from 0 to 2^52'); break;
      case 'snapshot':
        if (!isCount(ev.index, 0)) bad('"index" is not an integer from 0 to 2^52');
        if (!isCount(ev.term, 0)) bad('"term" is not an integer');
        break;
      case 'net':
        if (ev.groups !== undefined &&
            !(Array.isArray(ev.groups) && ev.groups.every((g) => Array.isArray(g)))) {
          bad('"groups" is not a list of lists of nodes');
        }
        if (ev.cut !== undefined &&
            !(Array.isArray(ev.cut) && ev.cut.every((p) => Array.isArray(p) && p.length === 2))) {
          bad('"cut" is not a list of [from, to] pairs');
        }
        break;
      default: break;
    }
  }

  function newNode() {
    return {
      // `seen`: the node has appeared in the run (node_ids lists every node
      // that ever existed, including members added later).
      seen: false, role: 'follower', term: 0, leader: null, vote: null, crashed: false,
      timerSet: null, timerDeadline: null,
      tail: null,    // the log's last run {start, term, prev}, runs never mutated
      last: 0,       // last log index
      commit: 0, snap: 0, snapTerm: 0,
      voters: null, learners: null,
    };
  }

  function cloneNode(n) {
    return Object.assign({}, n); // the runs are shared: they never change
  }

  // Cut links are kept as "a\u0000b" keys with a < b.
  function linkKey(a, b) { return a < b ? a + '\u0000' + b : b + '\u0000' + a; }

  function cutsOf(ev) {
    const cut = new Set();
    if (Array.isArray(ev.groups)) {
      // Nodes in different groups cannot talk; a node in no group is alone.
      const group = new Map();
      ev.groups.forEach((g, gi) => g.forEach((id) => group.set(id, gi)));
      return { groups: ev.groups, cut: cut, group: group };
    }
    if (Array.isArray(ev.cut)) ev.cut.forEach((p) => cut.add(linkKey(p[0], p[1])));
    return { groups: null, cut: cut, group: null };
  }

  /** The terms of log entries lo..hi (null past the log's end, -1 where
   * unknown: before an installed snapshot).  Walks back from the tail, so
   * it is cheap for the newest entries, which is all the viewer draws. */
  function termsIn(node, lo, hi) {
    const out = [];
    for (let idx = lo; idx <= hi; idx++) out.push(null);
    let cell = node.tail;
    for (let idx = Math.min(hi, node.last); idx >= lo && idx >= 1; idx--) {
      while (cell && cell.start > idx) cell = cell.prev;
      if (!cell) break;
      out[idx - lo] = cell.term;
    }
    return out;
  }

  function termAt(node, index) { return termsIn(node, index, index)[0]; }

  function truncateLog(node, keep) {
    if (keep >= node.last) return;
    while (node.tail && node.tail.start > keep) node.tail = node.tail.prev;
    node.last = Math.max(keep, 0);
  }

  /** Entries up to `index` whose terms the trace never gave (-1): one run,
   * however many entries (an append or snapshot far past the log's end). */
  function padTo(node, index) {
    if (node.last >= index) return;
    if (!node.tail || node.tail.term !== -1) {
      node.tail = { start: node.last + 1, term: -1, prev: node.tail };
    }
    node.last = index;
  }

  function pushTerm(node, term) {
    node.last += 1;
    if (!node.tail || node.tail.term !== term) {
      node.tail = { start: node.last, term: term, prev: node.tail };
    }
  }

  class State {
    constructor(nodeIds) {
      this.i = -1;
      this.nodes = new Map();
      nodeIds.forEach((id) => this.nodes.set(id, newNode()));
      this.flight = new Set();   // ids of messages sent and not yet delivered or dropped
      this.drops = [];           // [{id, t}] recently dropped, for the fade-out
      this.net = { groups: null, cut: new Set(), group: null };
    }

    clone() {
      const c = Object.create(State.prototype);
      c.i = this.i;
      c.nodes = new Map();
      this.nodes.forEach((n, id) => c.nodes.set(id, cloneNode(n)));
      c.flight = new Set(this.flight);
      c.drops = this.drops.slice();
      c.net = this.net; // replaced, never mutated
      return c;
    }

    node(id) {
      let n = this.nodes.get(id);
      if (!n) { n = newNode(); this.nodes.set(id, n); }
      n.seen = true;
      return n;
    }

    isCut(a, b) {
      const net = this.net;
      if (net.group) {
        const ga = net.group.get(a), gb = net.group.get(b);
        if (ga === undefined || gb === undefined || ga !== gb) return true;
      }
      return net.cut.has(linkKey(a, b));
    }

    /** Apply event `ev` (number `i`) to this state. */
    apply(ev, i) {
      this.i = i;
      if (this.drops.length && ev.t - this.drops[0].t > DROP_FADE_MS) {
        this.drops = this.drops.filter((d) => ev.t - d.t <= DROP_FADE_MS);
      }
      let n;
      switch (ev.k) {
        case 'send': this.flight.add(ev.id); this.node(ev.from); break;
        case 'deliver': this.flight.delete(ev.id); break;
        case 'drop':
          this.flight.delete(ev.id);
          this.drops.push({ id: ev.id, t: ev.t });
          break;
        case 'dup': this.flight.add(ev.copy); break;
        case 'crash': this.node(ev.node).crashed = true; break;
        case 'restart': this.node(ev.node).crashed = false; break;
        case 'net': this.net = cutsOf(ev); break;
        case 'role':
          n = this.node(ev.node);
          n.role = ev.role; n.term = ev.term;
          n.leader = ev.leader === undefined ? null : ev.leader;
          n.vote = ev.vote === undefined ? null : ev.vote;
          break;
        case 'timer':
          n = this.node(ev.node);
          n.timerSet = ev.t; n.timerDeadline = ev.deadline;
          break;
        case 'append':
          n = this.node(ev.node);
          truncateLog(n, ev.index - 1);
          padTo(n, ev.index - 1); // a gap: terms unknown
          (ev.terms || []).forEach((term) => pushTerm(n, term));
          break;
        case 'truncate':
          n = this.node(ev.node);
          truncateLog(n, ev.index - 1);
          n.commit = Math.min(n.commit, n.last);
          break;
        case 'commit': this.node(ev.node).commit = ev.index; break;
        case 'snapshot':
          n = this.node(ev.node);
          n.snap = ev.index; n.snapTerm = ev.term;
          if (n.last < ev.index || termAt(n, ev.index) !== ev.term) {
            // An installed snapshot replaces the log up to its index.
            truncateLog(n, 0);
            padTo(n, ev.index - 1);
            pushTerm(n, ev.term);
          }
          n.commit = Math.max(n.commit, ev.index);
          break;
        case 'conf':
          n = this.node(ev.node);
          n.voters = ev.voters || []; n.learners = ev.learners || [];
          break;
        default: break; // violation, liveness and kinds this viewer does not draw
      }
    }
  }

  /** A loaded trace: its events, its messages and its checkpoints. */
  class Replay {
    constructor(trace) {
      checkTrace(trace);
      this.trace = trace;
      this.events = trace.events;
      this.nodeIds = trace.node_ids.slice();
      // The message table as event indices (no object per message: a 50 MB
      // trace has a few hundred thousand messages, and allocating a record
      // for each doubled the load time in garbage collection).
      this.sendAt = new Map(); // message id -> index of its "send" (a copy: the original's)
      this.bornAt = new Map(); // copy id -> index of the "dup" that made it
      this.endAt = new Map();  // message id -> index of its "deliver" or "drop"
      this.checkpoints = [];
      this.violationEvent = null;
      this.livenessEvent = null;
      this.index();
    }

    // One pass over the events: the message table, the checkpoints and
    // where the verdict's events are.
    index() {
      const state = new State(this.nodeIds);
      const events = this.events, sendAt = this.sendAt, bornAt = this.bornAt, endAt = this.endAt;
      for (let i = 0; i < events.length; i++) {
        if (i % CHECKPOINT_EVERY === 0) this.checkpoints.push(state.clone());
        const ev = events[i];
        if (!ev || typeof ev !== 'object' || typeof ev.t !== 'number') {
          throw new TraceFormatError('event ' + i + ' has no time "t"');
        }
        checkEvent(ev, i);
        switch (ev.k) {
          case 'send': sendAt.set(ev.id, i); break;
          case 'dup':
            if (sendAt.has(ev.id)) { sendAt.set(ev.copy, sendAt.get(ev.id)); bornAt.set(ev.copy, i); }
            break;
          case 'deliver': case 'drop':
            if (!endAt.has(ev.id)) endAt.set(ev.id, i);
            break;
          case 'violation': if (this.violationEvent === null) this.violationEvent = i; break;
          case 'liveness': if (this.livenessEvent === null) this.livenessEvent = i; break;
          default: break;
        }
        state.apply(ev, i);
      }
      const v = this.trace.verdict || {};
      if (Number.isInteger(v.event) && v.event >= 0 && v.event < events.length) {
        if (events[v.event].k === 'violation') this.violationEvent = v.event;
      }
      this.endTime = events.length ? events[events.length - 1].t : 0;
    }

    /** Message `id` as drawn: {id, from, to, type, term, t0, t1, end, why}
     * (t1, end and why are null while it was never delivered or dropped). */
    msg(id) {
      const s = this.sendAt.get(id);
      if (s === undefined) return null;
      const send = this.events[s], born = this.bornAt.get(id), e = this.endAt.get(id);
      const end = e === undefined ? null : this.events[e];
      return { id: id, from: send.from, to: send.to, type: send.type, term: send.term,
        t0: born === undefined ? send.t : this.events[born].t,
        t1: end ? end.t : null, end: end ? end.k : null, why: end ? end.why || null : null };
    }

    /** The state after events 0..i (a fresh copy the caller may advance). */
    stateAt(i) {
      i = Math.max(-1, Math.min(i, this.events.length - 1));
      const k = Math.min(Math.floor((i + 1) / CHECKPOINT_EVERY), this.checkpoints.length - 1);
      if (k < 0) return new State(this.nodeIds);
      const state = this.checkpoints[k].clone();
      for (let j = k * CHECKPOINT_EVERY; j <= i; j++) state.apply(this.events[j], j);
      return state;
    }

    verdict() {
      const v = this.trace.verdict || {};
      const vev = this.violationEvent === null ? null : this.events[this.violationEvent];
      return {
        ok: v.ok === true,
        violation: v.violation || (vev ? vev.message : null),
        liveness: v.liveness_failure || null,
      };
    }
  }

  root.LiferaftReplay = {
    Replay, State, TraceFormatError, checkTrace, termAt, termsIn, CHECKPOINT_EVERY, DROP_FADE_MS,
    MAX_NODES,
  };
})(typeof window !== 'undefined' ? window : globalThis);
