// Boot, the live stream and failover.
//
// The page reads /v1/console/stream (NDJSON, one line a second, pushed by
// the node) with a streamed fetch, because EventSource cannot send an
// Authorization header and a token never goes into a URL.  Every line
// names every member's client address; when the stream fails or stalls the
// page marks its node down and carries on through the next member, with
// the same scheme as the page (the node answers CORS for its members'
// origins).  Reconnects are at least a second apart, so the page never asks
// more often than the server pushes.
//
// Who gets the token on failover: only members some line showed answering
// the status call (over the peer port, where a member proves itself), and
// only at an origin this page's Content-Security-Policy lets it reach.  A
// member that never answered (a learner added with a peer address nothing
// listens on, and any client address) is never tried, not even when every
// member that answered has failed here: the page keeps retrying those.

import { conn, headers, originOf, readLines, setToken, token } from './api.js';
import { renderMembers, renderTransferChoices } from './view-members.js';
import { Timeline } from './view-timeline.js';
import { Plots } from './plots.js';
import { initKeys, clearKeys } from './keys.js';
import { adminIdle, initAdmin } from './admin.js';

const STALL_MS = 3000;      // no line for this long: the node is taken as down
const MIN_GAP_MS = 1000;    // never reconnect faster than the server pushes
const MAX_GAP_MS = 5000;
const ADMIN_WAIT_MS = 5000; // how long leaving a removed node waits for an admin call's outcome
const RELOAD_KEY = 'liferaft.policyReload';  // the origins this tab last reloaded for, when, how often
const RELOAD_GAP_MS = 10000;      // the least time between two policy reloads, doubled each time
const RELOAD_MAX_GAP_MS = 300000;

// The origins this page's Content-Security-Policy lets it connect to, as
// the node that served it names them (index.html's meta tag, filled with
// the same set as the header).  Fixed for the page's life: a browser keeps
// the policy a page came with.  Empty: not known (an older node), no check.
const POLICY = new Set(
  (document.querySelector('meta[name="liferaft-connect-src"]')?.content || '')
    .split(/\s+/).filter(Boolean).map((o) => o.toLowerCase()),
);

const $ = (id) => document.getElementById(id);

const state = {
  members: [],              // the latest line's members
  addrs: new Map(),         // id -> client_addr, remembered across lines
  pageDown: new Set(),      // nodes whose stream failed here (until a line says they answer)
  answered: new Set(),      // members a line showed answering (or serving it): the token may go there
  line: null,
  authLost: false,          // an API call got a 401: ask for the token again
  home: null,               // the node that served this page (reached with relative URLs)
  notMember: null,          // the serving node said it is no member any more
};

const timeline = new Timeline($('timeline'));
const plots = new Plots($('rates'));
let currentAbort = null;
let loginWaiter = null;

function downIds() {
  const down = new Set(state.pageDown);
  for (const m of state.members) if (m.reachable === false) down.add(m.id);
  return down;
}

function renderStatus(extra) {
  const parts = [];
  if (conn.nodeId) parts.push(`via ${conn.nodeId}`);
  for (const id of [...downIds()].sort()) parts.push(`${id} down`);
  if (extra) parts.push(extra);
  $('status').textContent = parts.join(' · ') || 'connecting…';
  $('status').classList.toggle('warn', downIds().size > 0 || Boolean(extra));
}

// Whether the page's own origin is a current member's client address: only
// then do the other members answer its cross-origin calls (CORS).  A page
// opened as localhost:8001 when the members advertise 127.0.0.1:8001, or
// on a node since removed, is not.
function ownOriginIsMember() {
  const port = location.port || (location.protocol === 'https:' ? '443' : '80');
  const own = `${location.hostname}:${port}`.toLowerCase();
  return state.members.some((m) => (m.client_addr || '').toLowerCase() === own);
}

// Whether the node at `base` answers at all: /ui/ needs no token, and a
// no-cors fetch resolves (opaque) whatever the node's CORS answer.  Bounded,
// since a stopped (SIGSTOP) node accepts connections and never answers.
async function answers(base) {
  try {
    await fetch(base + '/ui/', { mode: 'no-cors', cache: 'no-store', signal: AbortSignal.timeout(2000) });
    return true;
  } catch {
    return false;
  }
}

// Whether this page may connect to a member's client address at all: its
// policy allows the origin (the page's own node is reached with its own
// URLs, always allowed).  A call the policy blocks fails at once, exactly
// like a dead node, so such a member is no failover target.
function policyAllows(id) {
  if (id === state.home) return true;
  const addr = state.addrs.get(id);
  return Boolean(addr) && (POLICY.size === 0 || POLICY.has(originOf(addr).toLowerCase()));
}

// The user is in the middle of something a reload would lose.
function busy() {
  const a = document.activeElement;
  const typing = a && ['INPUT', 'SELECT', 'TEXTAREA'].includes(a.tagName) && !a.closest('#login');
  return Boolean(typing) || !$('kv-tail-stop').disabled;
}

// While the page streams from its own node, a line naming a member whose
// origin the page's policy does not allow means the policy is older than
// the address book: reload from this node (same origin: the token stays in
// the tab) to get a current one, while the node is there to serve it.  Not
// while the user types or tails (the next line asks again), and once per set
// of missing origins: if a reload did not bring them in, another would not.
// Nor in a loop: a node whose every line names a new member outside the
// policy (buggy, or learners added in a loop) would reload the page each
// second.  The first reload is at once; each next one waits twice as long
// as the last (10 s, 20 s, ... up to 5 min) until a line finds the policy
// current.
function reloadIfPolicyStale() {
  if (conn.base !== '' || POLICY.size === 0) return;
  const missing = state.members.filter((m) => m.client_addr && !policyAllows(m.id))
    .map((m) => originOf(m.client_addr).toLowerCase()).sort().join(' ');
  let last = null;
  try { last = JSON.parse(sessionStorage.getItem(RELOAD_KEY)); } catch { /* not ours */ }
  if (!missing) {
    if (last) sessionStorage.removeItem(RELOAD_KEY);
    return;
  }
  if (busy() || (last && last.missing === missing)) return;
  const n = last ? last.n || 1 : 0;
  if (n && Date.now() - (last.at || 0) < Math.min(RELOAD_MAX_GAP_MS, RELOAD_GAP_MS * 2 ** (n - 1))) {
    return;
  }
  try {
    sessionStorage.setItem(RELOAD_KEY, JSON.stringify({ missing, at: Date.now(), n: n + 1 }));
  } catch {
    return;   // storage full (a huge set of addresses): no record, no reload
  }
  console.info('console: reloading for a policy that allows', missing);
  location.reload();
}

// A node removed from the cluster still runs and streams, but its view is
// no longer the cluster's: the members refuse it, so it shows every one of
// them down, under its own name as `via`.  None of that is shown: the page
// keeps the view it last had from a member and takes from the line only who
// the members are (so it knows its own origin is no member's any more),
// then leaves that node.  Not their addresses: a node that is no member is
// trusted no more than a stranger, and the token follows the addresses the
// page keeps (a line naming a learner's address as n2's would send the page
// there), so each keeps the one members' lines gave it.
function leaveRemoved(line, members) {
  conn.nodeId = line.via;
  state.notMember = line.via;
  state.members = members.map((m) => ({
    id: m.id, voter: m.voter, client_addr: state.addrs.get(m.id) || '',
  }));
  renderStatus(`${line.via} is no longer a member`);
  if (currentAbort) currentAbort.abort();
}

function onLine(line) {
  const members = Array.isArray(line.members) ? line.members : [];
  if (line.via && members.length && !members.some((m) => m.id === line.via)) {
    leaveRemoved(line, members);
    return;
  }
  if (conn.base === '' && line.via) state.home = line.via;
  state.line = line;
  conn.nodeId = line.via;
  state.pageDown.delete(line.via);
  if (line.via) state.answered.add(line.via);
  state.members = members;
  for (const m of members) {
    if (m.client_addr) state.addrs.set(m.id, m.client_addr);
    if (m.reachable === true) {
      state.pageDown.delete(m.id);
      state.answered.add(m.id);
    }
  }
  $('leader').textContent = line.leader ?? 'none';
  $('term').textContent = line.term ?? '–';
  $('via').textContent = line.via ?? '–';
  const down = downIds();
  renderMembers($('members').tBodies[0], state.members, { leader: line.leader, via: line.via, down });
  renderTransferChoices($('transfer-to'), state.members, line.leader, down);
  if (Array.isArray(line.history)) plots.reset(line.history);
  if (line.rates) plots.add(line.rates);
  if (Array.isArray(line.timeline)) timeline.merge(line.timeline);
  renderStatus();
  reloadIfPolicyStale();
}

// One stream to `base` until it ends, fails or stalls: 'unauthorized',
// 'lines' (it delivered at least one line, then broke) or 'failed'.
async function streamOnce(base) {
  const ctl = new AbortController();
  currentAbort = ctl;
  let last = Date.now();
  let got = false;
  const watchdog = setInterval(() => {
    if (Date.now() - last > STALL_MS) ctl.abort();
  }, 500);
  try {
    const res = await fetch(base + '/v1/console/stream', {
      headers: headers(), signal: ctl.signal, cache: 'no-store',
    });
    if (res.status === 401) return 'unauthorized';
    if (!res.ok) return got ? 'lines' : 'failed';
    $('login').hidden = true;
    $('app').hidden = false;
    await readLines(res, (line) => { last = Date.now(); got = true; onLine(line); });
  } catch (err) {
    if (!ctl.signal.aborted) console.warn('console stream:', err);
  } finally {
    clearInterval(watchdog);
    ctl.abort();
    if (currentAbort === ctl) currentAbort = null;
  }
  return got ? 'lines' : 'failed';
}

// The next member to try after `failed`, in member order after it.  The
// page sends the token with the stream, so only members a line showed
// answering are candidates (and only where the page's policy lets it
// connect): first those the last line says answer, then those that have
// not failed here, then each in turn again (a member that answered may
// come back).  A member that never answered is never handed the token; with
// no candidate left the page retries the node it had.
function nextTarget(failed) {
  const ids = state.members.map((m) => m.id);
  const start = Math.max(0, ids.indexOf(failed));
  const order = ids.slice(start + 1).concat(ids.slice(0, start + 1))
    .filter((id) => state.answered.has(id) && policyAllows(id));
  const down = downIds();
  const pick = order.find((id) => id !== failed && !down.has(id))
    ?? order.find((id) => id !== failed && !state.pageDown.has(id))
    ?? order.find((id) => id !== failed);
  if (pick === undefined) return { base: conn.base, id: failed };
  const addr = state.addrs.get(pick);
  const base = pick === state.home || addr === location.host ? '' : originOf(addr);
  return { base, id: pick };
}

// While the login shows, no cluster data is on the page.
function clearData() {
  state.members = [];
  state.line = null;
  for (const id of ['leader', 'term', 'via']) $(id).textContent = '–';
  $('members').tBodies[0].replaceChildren();
  $('transfer-to').replaceChildren();
  $('admin-result').textContent = '';
  timeline.clear();
  plots.clear();
  clearKeys();
}

function showLogin(message) {
  clearData();
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('status').textContent = 'sign in to see the cluster';
  $('token').focus();
  return new Promise((resolve) => { loginWaiter = resolve; });
}

function initLogin() {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    setToken(t);
    $('token').value = '';
    $('login-error').textContent = '';
    if (loginWaiter) { loginWaiter(); loginWaiter = null; }
  });
  // Any API call that comes back 401 (the token changed on the nodes):
  // drop the token and let the stream loop ask for a new one.
  conn.onUnauthorized = () => {
    setToken(null);
    state.authLost = true;
    if (currentAbort) currentAbort.abort();
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run() {
  let failures = 0;          // consecutive attempts that gave no line
  let refused = false;       // the last login attempt was refused
  for (;;) {
    const began = Date.now();
    let outcome = 'failed';
    if (conn.base && !ownOriginIsMember()) {
      // The members refuse this origin's cross-origin calls, and CORS is
      // kept to member origins: carry on by opening the page from that
      // member instead (its own origin).  The token, kept per origin, is
      // asked for again there.
      if (await answers(conn.base)) { location.replace(conn.base + '/ui/'); return; }
    } else {
      outcome = await streamOnce(conn.base);
    }
    if (outcome === 'unauthorized' || state.authLost) {
      const hadToken = Boolean(token()) || state.authLost;
      state.authLost = false;
      setToken(null);
      await showLogin(hadToken || refused ? 'That token was refused (401). Try again.' : '');
      refused = true;
      continue;   // retry the same node with the new token at once
    }
    refused = false;
    failures = outcome === 'lines' ? 0 : failures + 1;
    const failed = conn.nodeId;
    const removed = Boolean(failed) && failed === state.notMember;
    if (removed) {
      state.addrs.delete(failed);   // not down: gone from the cluster
      state.notMember = null;
    } else if (failed) {
      state.pageDown.add(failed);
    }
    const next = nextTarget(failed);
    conn.base = next.base;
    if (next.id !== failed) conn.nodeId = next.id;
    // After a removal the rows stay those of the last member's line: the
    // list state.members now holds carries no state to draw.
    if (state.line && !removed) {
      renderMembers($('members').tBodies[0], state.members,
        { leader: state.line.leader, via: state.line.via, down: downIds() });
    }
    const why = removed ? `${failed} is no longer a member · ` : '';
    renderStatus(failed ? `${why}trying ${next.id}` : 'reconnecting');
    // The page is about to leave a node that still runs and answers: the
    // call that removed it (from this page, say) answers in a moment, and
    // its outcome is shown here before the page moves (bounded: a call
    // never hangs the move for long).
    if (removed) await Promise.race([adminIdle(), sleep(ADMIN_WAIT_MS)]);
    // A full round of members without a line backs off, up to 5 s.
    const rounds = Math.floor(failures / Math.max(1, state.addrs.size));
    const gap = Math.min(MAX_GAP_MS, MIN_GAP_MS * 2 ** rounds);
    await sleep(Math.max(0, gap - (Date.now() - began)));
  }
}

initLogin();
initKeys();
initAdmin();
run();
