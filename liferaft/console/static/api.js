// The one place that talks HTTP: which node the page uses, the token, and
// JSON calls with the API's {"error","message"} errors turned into text.
// Every other module calls through here, so after a failover every key
// browser and admin call goes to the node the stream moved to.

const TOKEN_KEY = 'liferaft.token';

export const conn = {
  // '' means the page's own origin (relative URLs); after a failover it is
  // 'http://HOST:PORT' of another member, with the page's own scheme.
  base: '',
  nodeId: null,      // the id of the node in use, once a stream line named it
  onUnauthorized: () => {},
};

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function originOf(clientAddr) {
  return clientAddr ? `${location.protocol}//${clientAddr}` : '';
}

export function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = 'Bearer ' + t;  // a header, never a URL parameter
  return h;
}

export function keyPath(key) {
  // Keys may hold '/' and anything else: percent-encode every byte that is
  // not safe (the server decodes %2F back to '/').
  return '/v1/kv/' + encodeURIComponent(key);
}

// Longest a call waits for its answer: a member that accepts the connection
// and never answers (stopped, wedged) must not leave the page "working…"
// forever.  Longer than the server's own limits on a write or a membership
// change, which answer 503/504 themselves.
export const CALL_TIMEOUT_MS = 30000;

// What call() returns as the body of a call that ran out of time, and of a
// change (any method but GET) whose connection failed: the page cannot tell
// a connection refused before the request left from one reset after the
// node got it, so the change may have been made (DESIGN.md: "unknown"
// unless it provably was not).
const TIMED_OUT = 'timed out';
const LOST = 'connection lost';

// Whether a failed call's change may still have been made: no answer
// (timed out, or the connection lost on a change), or the API's own 504.
export function outcomeUnknown(status, body) {
  return status === 504 || (status === 0 && (body === TIMED_OUT || body === LOST));
}

// The API's error text: "409 conflict: a change is in flight".
export function errorText(status, body) {
  if (body && typeof body === 'object' && body.error) {
    return `${status} ${body.error}: ${body.message || ''}`.trim();
  }
  if (status === 0 && body === TIMED_OUT) {
    return `no answer within ${CALL_TIMEOUT_MS / 1000} s: the outcome is unknown ` +
      '(the members table shows what happened)';
  }
  if (status === 0 && body === LOST) {
    return 'no answer (the node may be down): the outcome is unknown ' +
      '(the members table shows what happened)';
  }
  if (status === 0) return 'no answer (the node may be down)';
  return `${status} ${typeof body === 'string' ? body.slice(0, 200) : ''}`.trim();
}

// One JSON call to the node in use: {ok, status, body}; never throws, and
// never waits past CALL_TIMEOUT_MS (status 0, then).
export async function call(method, path, body, { base = conn.base, signal } = {}) {
  const deadline = AbortSignal.timeout(CALL_TIMEOUT_MS);
  const init = {
    method, headers: headers(), cache: 'no-store',
    signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(base + path, init);
  } catch (err) {
    if (deadline.aborted) return { ok: false, status: 0, body: TIMED_OUT };
    return { ok: false, status: 0, body: method === 'GET' ? String(err) : LOST };
  }
  let data;
  let cut = false;
  const text = await res.text().catch(() => { cut = true; return ''; });
  if (cut && deadline.aborted) return { ok: false, status: 0, body: TIMED_OUT };
  // A change whose status line came and whose body was cut: the status
  // says what happened (a 2xx: it was made), so it stands, with no body.
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (res.status === 401) conn.onUnauthorized();
  return { ok: res.ok, status: res.status, body: data };
}

// Read an NDJSON body line by line: onLine(obj) for each; resolves when the
// body ends, rejects on a network error or abort.
export async function readLines(res, onLine) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}

// Small DOM helper: el('td', {class: 'x', dataset: {id}}, 'text', child...)
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'class') e.className = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export function fmtTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}
