// The timeline: entries from every node the page has streamed from, merged
// and shown newest first.  Two nodes record the same event separately (each
// sees the election), and a node's first stream line repeats its whole
// buffer, so an entry is dropped when one of the same kind, node and term is
// already held within 2 seconds of it.

import { el, fmtTime } from './api.js';

const SAME_WITHIN_S = 2;
const MAX_ENTRIES = 2000;    // the nodes keep an hour; the page keeps at most this many

export class Timeline {
  constructor(list) {
    this.list = list;
    this.entries = [];       // newest first
  }

  clear() {
    this.entries = [];
    this.list.replaceChildren();
  }

  isDuplicate(e) {
    return this.entries.some((h) => h.kind === e.kind && h.node === e.node
      && (h.term ?? null) === (e.term ?? null) && Math.abs(h.at - e.at) <= SAME_WITHIN_S);
  }

  merge(incoming) {
    let added = 0;
    for (const e of incoming) {
      if (!e || typeof e.at !== 'number' || this.isDuplicate(e)) continue;
      this.entries.push(e);
      added += 1;
    }
    if (added === 0) return;
    this.entries.sort((a, b) => b.at - a.at);
    this.entries.length = Math.min(this.entries.length, MAX_ENTRIES);
    this.render();
  }

  render() {
    this.list.replaceChildren(...this.entries.map((e) => el('li', {
      class: `event kind-${e.kind}`,
      dataset: { kind: e.kind, node: e.node ?? '', term: e.term ?? '' },
    },
    el('time', { datetime: new Date(e.at * 1000).toISOString() }, fmtTime(e.at)),
    el('span', { class: 'kind' }, e.kind.replace('_', ' ')),
    el('span', { class: 'text' }, e.text || `${e.node} ${e.kind}`),
    e.seen_by ? el('span', { class: 'seen muted' }, `seen by ${e.seen_by}`) : null)));
  }
}
