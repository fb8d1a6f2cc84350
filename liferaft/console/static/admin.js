// Admin actions: the same API calls as the `liferaft` CLI, to the node the
// page uses (a follower passes a transfer or membership change to the
// leader itself).  Each asks window.confirm first and shows its outcome, or
// the API's own error text, in #admin-result.

import { call, conn, errorText, outcomeUnknown } from './api.js';

const $ = (id) => document.getElementById(id);

function result(text, ok) {
  const out = $('admin-result');
  out.textContent = text;
  out.className = 'result ' + (ok ? 'ok' : 'bad');
}

// Admin calls in flight, and who waits for there to be none.
let inFlight = 0;
let idleWaiters = [];

// Resolves once no admin call is in flight (at once if none is): a page
// about to leave its node (removed from the cluster, maybe by this very
// call) shows the call's outcome first, rather than dropping it unseen.
export function adminIdle() {
  return inFlight === 0 ? Promise.resolve() : new Promise((r) => idleWaiters.push(r));
}

async function act(question, method, path, body, success) {
  if (!window.confirm(question)) { result('cancelled', true); return; }
  result('working…', true);
  inFlight += 1;
  try {
    const r = await call(method, path, body);
    if (r.ok) result(success(r.body || {}), true);
    // Never "failed" when the change may have been made.
    else if (outcomeUnknown(r.status, r.body)) result('unknown: ' + errorText(r.status, r.body), false);
    else result('failed: ' + errorText(r.status, r.body), false);
  } catch (err) {
    // A 2xx whose body is cut or not what the page expects (an older or
    // newer node): the change was made, so say so rather than stay "working…".
    result(`done, but its answer could not be read (${err})`, true);
  } finally {
    inFlight -= 1;
    if (inFlight === 0) { for (const w of idleWaiters.splice(0)) w(); }
  }
}

const names = (body) => (body.members || []).map((m) => m.id + (m.voter ? '' : ' (learner)')).join(', ');

export function initAdmin() {
  $('transfer').addEventListener('click', () => {
    const to = $('transfer-to').value;
    if (!to) { result('no other voter to transfer to', false); return; }
    act(`Transfer leadership to ${to}?`, 'POST', '/v1/leader/transfer', { to },
      (b) => `leader is now ${b.leader}`);
  });
  $('snapshot').addEventListener('click', () => {
    const node = conn.nodeId || 'this node';
    act(`Take a snapshot on ${node} now?`, 'POST', '/v1/snapshot', {},
      (b) => `${node} took a snapshot at index ${b.index}`);
  });
  $('add-learner').addEventListener('click', () => {
    const id = $('add-learner-id').value.trim();
    const peer = $('add-learner-peer').value.trim();
    const client = $('add-learner-client').value.trim();
    if (!id || !peer) { result('a learner needs an id and a peer address', false); return; }
    act(`Add ${id} (peer ${peer}) as a learner?`, 'POST', '/v1/members',
      { id, peer_addr: peer, client_addr: client, voter: false },
      (b) => `added ${id}; members: ${names(b)}`);
  });
  // Per-row buttons: one listener on the table, since rows are rebuilt.
  $('members').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button');
    if (!btn || !btn.dataset.id) return;
    const id = btn.dataset.id;
    const path = '/v1/members/' + encodeURIComponent(id);
    if (btn.classList.contains('promote')) {
      act(`Promote learner ${id} to a voter?`, 'POST', path + '/promote', undefined,
        (b) => `promoted ${id}; members: ${names(b)}`);
    } else if (btn.classList.contains('remove')) {
      act(`Remove ${id} from the cluster? This changes the membership.`, 'DELETE', path, undefined,
        (b) => `removed ${id}; members: ${names(b)}`);
    }
  });
}
