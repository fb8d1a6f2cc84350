// The key browser: list keys by prefix (paged with the API's `next` and
// `read_revision`, so the pages are one listing at one revision), show a
// key's value and revisions with a bounded look at older values, and a live
// tail of changes under the prefix through /v1/watch (streamed NDJSON).

import { call, conn, el, errorText, headers, keyPath, readLines } from './api.js';

const PAGE = 100;          // keys per page
const OLDER_MAX = 10;      // older values read per key, at most
const TAIL_MAX = 200;      // tail lines kept on the page
const GLANCE = 300;        // characters of a value shown in the tail and older values
const $ = (id) => document.getElementById(id);

let listing = null;        // {prefix, next, revision} of the page shown
let tail = null;           // {ctl, stopped, lastRev} of the running tail
let shownKey = null;

function note(text) { $('kv-note').textContent = text; }

// The start of a value, for the tail and older values: a key holds up to
// megabytes, and 200 tail lines of that would make the tab hundreds of MB.
// The value clicked on is shown whole.
function glance(v) {
  const s = String(v ?? '');
  return s.length > GLANCE ? `${s.slice(0, GLANCE)}… (${s.length} characters)` : s;
}

async function listPage(prefix, more) {
  const q = new URLSearchParams({ prefix, limit: String(PAGE), keys_only: 'true' });
  if (more) { q.set('start', listing.next); q.set('revision', String(listing.revision)); }
  const r = await call('GET', '/v1/kv?' + q);
  if (!r.ok) { note(errorText(r.status, r.body)); return; }
  const items = r.body.items || [];
  if (!more) $('kv-keys').replaceChildren();
  for (const it of items) {
    $('kv-keys').append(el('li', { class: 'key', dataset: { key: it.key } },
      el('button', { type: 'button', class: 'linkish' }, it.key)));
  }
  listing = { prefix, next: r.body.next, revision: r.body.read_revision };
  $('kv-more').hidden = !r.body.next;
  const shown = $('kv-keys').children.length;
  note(`${shown} key${shown === 1 ? '' : 's'} shown at revision ${r.body.read_revision}`
    + (r.body.next ? ' (more follow)' : ''));
}

async function showKey(key) {
  shownKey = key;
  $('kv-value').textContent = 'loading…';
  $('kv-revisions').replaceChildren();
  const r = await call('GET', keyPath(key));
  if (shownKey !== key) return;   // another key was clicked meanwhile
  if (!r.ok) { $('kv-value').textContent = errorText(r.status, r.body); return; }
  const it = r.body;
  $('kv-value').textContent = it.value;
  const facts = el('dl', { class: 'facts' },
    el('dt', {}, 'key'), el('dd', {}, it.key),
    el('dt', {}, 'create revision'), el('dd', { class: 'create-revision' }, it.create_revision),
    el('dt', {}, 'mod revision'), el('dd', { class: 'mod-revision' }, it.revision),
    el('dt', {}, 'version'), el('dd', { class: 'version' }, it.version),
    it.lease ? el('dt', {}, 'lease') : null, it.lease ? el('dd', {}, it.lease) : null);
  const older = el('ol', { class: 'older' });
  $('kv-revisions').replaceChildren(facts, el('h4', {}, 'Older values'), older);
  // Walk back one version at a time, at most OLDER_MAX reads, and never
  // past the revision that created the key (before it, another life of the
  // key or nothing).
  let cur = it;
  let end = '';
  for (let reads = 0; cur.revision > it.create_revision; reads++) {
    if (reads === OLDER_MAX) { end = `only the last ${OLDER_MAX} older values are read`; break; }
    const o = await call('GET', `${keyPath(key)}?revision=${cur.revision - 1}`);
    if (shownKey !== key) return;
    if (!o.ok) {
      end = o.body && o.body.error === 'compacted'
        ? `older values were compacted away (before revision ${o.body.compact_revision})`
        : errorText(o.status, o.body);
      break;
    }
    cur = o.body;
    older.append(el('li', { class: 'older-value', dataset: { revision: cur.revision } },
      el('span', { class: 'muted' }, `rev ${cur.revision} (v${cur.version}) `), el('code', {}, glance(cur.value))));
  }
  if (!end && older.children.length === 0) end = 'none: this is its first version';
  if (end) older.append(el('li', { class: 'muted' }, end));
}

function tailLine(text, cls = 'change') {
  const log = $('kv-tail-log');
  log.prepend(el('li', { class: cls }, text));
  while (log.children.length > TAIL_MAX) log.lastChild.remove();
}

function setTailButtons(running) {
  $('kv-tail').disabled = running;
  $('kv-tail-stop').disabled = !running;
}

// One watch stream; resumes after the last revision seen if it breaks (on
// whichever node the page uses by then), at most once a second.
async function runTail(prefix) {
  const me = { ctl: null, stopped: false, lastRev: null };
  tail = me;
  setTailButtons(true);
  tailLine(`starting a watch on "${prefix}"…`, 'muted');
  while (!me.stopped) {
    const began = Date.now();
    const q = new URLSearchParams({ prefix });
    if (me.lastRev !== null) q.set('start_revision', String(me.lastRev + 1));
    me.ctl = new AbortController();
    try {
      const res = await fetch(conn.base + '/v1/watch?' + q,
        { headers: headers(), signal: me.ctl.signal, cache: 'no-store' });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        tailLine('tail refused: ' + errorText(res.status, body), 'muted');
        break;
      }
      await readLines(res, (line) => {
        if (line.created) {
          me.lastRev = line.start_revision - 1;
          tailLine(`watching "${prefix}" from revision ${line.start_revision}`, 'muted watching');
        }
        if (typeof line.progress === 'number') me.lastRev = line.progress;
        if (line.error) { tailLine(`server ended the tail: ${line.error} ${line.message || ''}`, 'muted'); }
        if (line.resume_revision) me.lastRev = line.resume_revision - 1;
        for (const ev of line.events || []) {
          const kv = ev.kv || {};
          tailLine(ev.type === 'delete'
            ? `rev ${line.revision}: delete ${kv.key}`
            : `rev ${line.revision}: put ${kv.key} = ${glance(kv.value)}`);
        }
        if (typeof line.revision === 'number' && line.events) me.lastRev = line.revision;
      });
    } catch (err) {
      if (me.stopped) break;
    }
    if (me.stopped) break;
    await new Promise((r) => setTimeout(r, Math.max(1000 - (Date.now() - began), 1000)));
  }
  if (tail === me) { tail = null; setTailButtons(false); }
}

function stopTail() {
  if (!tail) return;
  tail.stopped = true;
  if (tail.ctl) tail.ctl.abort();
  tailLine('tail stopped', 'muted');
  tail = null;
  setTailButtons(false);
}

export function clearKeys() {
  stopTail();
  listing = null;
  shownKey = null;
  for (const id of ['kv-keys', 'kv-revisions', 'kv-tail-log']) $(id).replaceChildren();
  $('kv-value').textContent = '';
  $('kv-more').hidden = true;
  note('');
}

export function initKeys() {
  $('kv-list').addEventListener('click', () => listPage($('kv-prefix').value, false));
  $('kv-prefix').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') listPage($('kv-prefix').value, false);
  });
  $('kv-more').addEventListener('click', () => { if (listing && listing.next) listPage(listing.prefix, true); });
  // One listener for every key: the list is rebuilt on each listing.
  $('kv-keys').addEventListener('click', (ev) => {
    const li = ev.target.closest('li.key');
    if (li) showKey(li.dataset.key);
  });
  $('kv-tail').addEventListener('click', () => { if (!tail) runTail($('kv-prefix').value); });
  $('kv-tail-stop').addEventListener('click', stopTail);
}
