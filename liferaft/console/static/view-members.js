// The members table and the transfer target list.  Rows are updated in
// place (a row is rebuilt only when what it shows changed), so a button
// the operator is about to press is not replaced under the pointer every
// second.

import { el } from './api.js';

const ROLES = new Set(['leader', 'follower', 'candidate', 'learner']);
const show = (v) => (v === null || v === undefined ? '–' : String(v));

function rowFacts(m, { leader, via, down }) {
  const isDown = down.has(m.id);
  return {
    id: m.id,
    role: isDown ? 'unknown' : (ROLES.has(m.role) ? m.role : 'unknown'),
    reachable: !isDown && m.reachable !== false,
    term: isDown ? null : m.term,
    leader: isDown ? null : m.leader,
    commit: m.commit_index, applied: m.applied_index, last: m.last_log_index,
    snapshot: m.snapshot_index, lag: m.lag,
    voter: m.voter, storage: m.storage_ok, addr: m.client_addr || '',
    error: m.error || (isDown ? 'the page lost its stream to this node' : ''),
    via: m.id === via, clusterLeader: m.id === leader,
  };
}

function buildRow(tr, f) {
  tr.className = 'member' + (f.reachable ? '' : ' down') + (f.via ? ' via' : '');
  tr.dataset.id = f.id;
  tr.dataset.role = f.role;
  tr.dataset.reachable = String(f.reachable);
  tr.dataset.term = f.term === null || f.term === undefined ? '' : String(f.term);
  const idCell = el('th', { scope: 'row' }, f.id);
  if (f.via) idCell.append(' ', el('span', { class: 'badge via', title: 'the page talks to this node' }, 'via'));
  const role = el('td', {}, el('span', { class: `role role-${f.role}` }, f.role));
  if (!f.reachable) role.append(' ', el('span', { class: 'badge down' }, 'down'));
  const reach = el('td', { title: f.error || '' }, f.reachable ? 'yes' : 'no');
  const storage = el('td', {}, f.storage === true ? 'ok' : f.storage === false ? 'FAILED' : '–');
  if (f.storage === false) storage.className = 'bad';
  const actions = el('td', { class: 'actions' });
  if (f.voter === false) {
    actions.append(el('button', { type: 'button', class: 'promote', dataset: { id: f.id } }, 'Promote'));
  }
  actions.append(el('button', { type: 'button', class: 'remove', dataset: { id: f.id } }, 'Remove'));
  tr.replaceChildren(
    idCell, role, el('td', {}, show(f.term)), el('td', {}, show(f.leader)),
    el('td', { class: 'num' }, show(f.commit)), el('td', { class: 'num' }, show(f.applied)),
    el('td', { class: 'num' }, show(f.last)), el('td', { class: 'num' }, show(f.snapshot)),
    el('td', { class: 'num' + (f.lag > 0 ? ' lagging' : '') }, show(f.lag)),
    reach, el('td', {}, f.voter ? 'voter' : 'learner'), storage,
    el('td', { class: 'addr' }, f.addr || '–'), actions,
  );
}

export function renderMembers(tbody, members, ctx) {
  const seen = new Set();
  let prev = null;
  for (const m of members) {
    const f = rowFacts(m, ctx);
    const sig = JSON.stringify(f);
    let tr = tbody.querySelector(`tr.member[data-id="${CSS.escape(m.id)}"]`);
    if (!tr) tr = el('tr');
    if (tr.dataset.sig !== sig) {
      buildRow(tr, f);
      tr.dataset.sig = sig;
    }
    // Keep member order without moving rows that are already in place.
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
    seen.add(m.id);
  }
  for (const tr of [...tbody.querySelectorAll('tr.member')]) {
    if (!seen.has(tr.dataset.id)) tr.remove();
  }
}

// Voters other than the leader, as <option>s; the choice survives updates.
export function renderTransferChoices(select, members, leader, down) {
  const ids = members.filter((m) => m.voter && m.id !== leader && !down.has(m.id)).map((m) => m.id);
  const have = [...select.options].map((o) => o.value);
  if (have.join('\n') === ids.join('\n')) return;
  const keep = select.value;
  select.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
  if (ids.includes(keep)) select.value = keep;
}
