// Tollgate token dashboard: plain JavaScript over the admin API (/api/v1/tokens).
// No framework, no build step, nothing from other origins. Data from the API only ever reaches
// the page through textContent / value, never as HTML.
'use strict';

(() => {
  const API = '/api/v1/tokens';
  const AUTH_KEY = 'tollgate.auth'; // sessionStorage: this tab only
  const WHO_KEY = 'tollgate.who'; // sessionStorage: which token signed in (id or name)
  const HOST_KEY = 'tollgate.proxyHost'; // localStorage: not secret
  const REGISTRY_KEY = 'tollgate.cargoRegistry'; // localStorage: not secret
  const NAME_RE = /^[A-Za-z0-9._@-]{1,64}$/;
  const DAY = 86400000;
  const PERMISSION_ORDER = { read: 0, write: 1, manager: 2 };
  const PERIOD_NAMES = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day', 604800: 'week' };

  const $ = (id) => document.getElementById(id);
  const el = (tag, props, ...children) => {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };

  const state = {
    tokens: [],
    sort: { key: 'name', dir: 1 },
    filter: '',
    editing: null, // the token being edited, or null when creating
    confirm: null, // {kind, token}
  };

  // ---------------------------------------------------------------------------------------
  // Storage that never throws (storage can be disabled)
  // ---------------------------------------------------------------------------------------

  const store = (area) => ({
    get(k) {
      try {
        return window[area].getItem(k);
      } catch {
        return null;
      }
    },
    set(k, v) {
      try {
        window[area].setItem(k, v);
      } catch {
        /* not remembered */
      }
    },
    del(k) {
      try {
        window[area].removeItem(k);
      } catch {
        /* nothing stored */
      }
    },
  });
  const session = store('sessionStorage');
  const local = store('localStorage');

  // ---------------------------------------------------------------------------------------
  // The API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function base64Utf8(s) {
    let bin = '';
    for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  /** The Authorization header for what the user pasted, and who that is. */
  function credentialOf(raw) {
    const v = raw.trim();
    const colon = v.indexOf(':');
    if (colon > 0) {
      const name = v.slice(0, colon);
      const secret = v.slice(colon + 1);
      const who = secret.startsWith('tok_') ? { id: secret.slice(4, 16) } : { name };
      return { header: 'Basic ' + base64Utf8(v), who };
    }
    return { header: 'Bearer ' + v, who: v.startsWith('tok_') ? { id: v.slice(4, 16) } : {} };
  }

  async function api(method, path, body, auth = session.get(AUTH_KEY)) {
    const headers = { Accept: 'application/json' };
    if (auth) headers.Authorization = auth;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch {
      throw new ApiError(
        0,
        'network',
        'Could not reach the Tollgate admin API. Check that Tollgate is running, then try again.',
      );
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const code = (data && data.error) || `http_${res.status}`;
      const message = (data && data.message) || `The server answered ${res.status} ${res.statusText}.`;
      throw new ApiError(res.status, code, message);
    }
    return data;
  }

  const sentence = (s) => {
    const t = String(s).trim();
    if (!t) return t;
    const first = t[0].toUpperCase() + t.slice(1);
    return /[.!?]$/.test(first) ? first : first + '.';
  };

  /** The API's error in plain words. */
  function plain(e) {
    if (!(e instanceof ApiError)) return 'Something went wrong in the page: ' + sentence(e && e.message);
    const m = e.message || '';
    switch (e.code) {
      case 'network':
        return m;
      case 'unauthenticated':
        return 'The token was refused: it is unknown, revoked, or its secret is wrong.';
      case 'token_expired':
        return 'The token has expired. Sign in with another manager token.';
      case 'token_disabled':
        return 'The token is disabled. Sign in with another manager token, or have it enabled again.';
      case 'forbidden':
        return 'This is not a manager token. The dashboard needs a token with the manager permission.';
      case 'conflict': {
        const dup = /named "(.*)" already exists(?: in| \()?\s*([a-z]+)?/.exec(m);
        if (dup) {
          const where = dup[2] === 'file' ? ' in a token file' : dup[2] === 'bootstrap' ? ' (the bootstrap token)' : '';
          return `The name “${dup[1]}” is already taken by another token${where}. Choose a different name.`;
        }
        return sentence(m);
      }
      case 'not_found':
        return 'This token no longer exists; it may have been revoked elsewhere. The list has been refreshed.';
      case 'no_database':
        return 'Tokens cannot be created or changed here: no token database is configured, so tokens come only from token files.';
      case 'read_only':
        return sentence(m);
      case 'database_unavailable':
      case 'busy':
      case 'reload_failed':
        return sentence(m) + ' Try again in a moment.';
      case 'invalid_request':
        return sentence(
          m.replace(/^invalid JSON body:\s*/, '').replace(/ at line \d+ column \d+$/, ''),
        );
      default:
        return sentence(m);
    }
  }

  /** Which form field an API error is about. */
  function fieldOf(e) {
    if (!(e instanceof ApiError)) return 'form';
    const m = e.message || '';
    if (e.code === 'conflict' && /already exists/.test(m)) return 'name';
    if (e.code !== 'invalid_request') return 'form';
    if (/^name\b/.test(m)) return 'name';
    if (/description/.test(m)) return 'description';
    if (/^route\b|routes/.test(m)) return 'routes';
    if (/expires_in|expires_at|expiry/.test(m)) return 'expiry';
    if (/rate_limit/.test(m)) return 'rate';
    if (/allowed_ips/.test(m)) return 'ips';
    if (/packages|package pattern/.test(m)) return 'packages';
    if (/permission|unknown variant/.test(m)) return 'permission';
    return 'form';
  }

  // ---------------------------------------------------------------------------------------
  // Messages
  // ---------------------------------------------------------------------------------------

  let announceTimer = 0;
  function announce(msg) {
    const s = $('status');
    s.textContent = '';
    clearTimeout(announceTimer);
    // A fresh text node after a tick, so the same message is announced again.
    announceTimer = setTimeout(() => {
      s.textContent = msg;
    }, 30);
  }

  function setError(id, msg) {
    const e = $(id);
    e.textContent = msg || '';
    const field = e.closest('.field');
    if (field) field.classList.toggle('invalid', Boolean(msg));
  }

  function busy(button, on) {
    button.disabled = on;
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // ---------------------------------------------------------------------------------------
  // Sign in / out
  // ---------------------------------------------------------------------------------------

  function showSignIn(message) {
    $('tokens').hidden = true;
    $('usage').hidden = true;
    $('trust').hidden = true;
    $('session').hidden = true;
    $('signin').hidden = false;
    setError('signin-error', message || '');
    $('signin-token').focus();
  }

  function showApp() {
    $('signin').hidden = true;
    $('tokens').hidden = false;
    $('usage').hidden = false;
    $('session').hidden = false;
    loadTrust();
  }

  function signOut(message) {
    session.del(AUTH_KEY);
    session.del(WHO_KEY);
    state.tokens = [];
    $('token-rows').replaceChildren();
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    showSignIn(message);
    announce(message || 'Signed out. The token was forgotten.');
  }

  /** The stored session was refused: back to sign-in, saying why. */
  function sessionEnded(e) {
    signOut('You were signed out: ' + plain(e));
  }

  const isAuthError = (e) => e instanceof ApiError && (e.status === 401 || e.status === 403);

  async function signIn(ev) {
    ev.preventDefault();
    const input = $('signin-token');
    const raw = input.value.trim();
    setError('signin-error', '');
    if (!raw) {
      setError('signin-error', 'Paste a manager token first.');
      input.focus();
      return;
    }
    const { header, who } = credentialOf(raw);
    const button = $('signin-submit');
    busy(button, true);
    try {
      const data = await api('GET', API, undefined, header);
      session.set(AUTH_KEY, header);
      session.set(WHO_KEY, JSON.stringify(who));
      input.value = '';
      showApp();
      setTokens(data.tokens);
      announce('Signed in. ' + countText());
      $('new-token').focus();
    } catch (e) {
      setError('signin-error', plain(e));
      input.focus();
    } finally {
      busy(button, false);
    }
  }

  function me() {
    try {
      return JSON.parse(session.get(WHO_KEY) || '{}') || {};
    } catch {
      return {};
    }
  }

  const isMe = (t) => {
    const w = me();
    return (w.id && w.id === t.id) || (w.name && w.name === t.name);
  };

  // ---------------------------------------------------------------------------------------
  // The table
  // ---------------------------------------------------------------------------------------

  async function load() {
    setError('list-error', '');
    try {
      const data = await api('GET', API);
      setTokens(data.tokens);
      return true;
    } catch (e) {
      if (isAuthError(e)) sessionEnded(e);
      else setError('list-error', 'The token list could not be loaded. ' + plain(e));
      return false;
    }
  }

  /** The trust policies (trusted publishing), shown only when it is enabled. */
  async function loadTrust() {
    setError('trust-error', '');
    try {
      const data = await api('GET', '/api/v1/trust-policies');
      $('trust').hidden = !data.enabled;
      const policies = Array.isArray(data.policies) ? data.policies : [];
      const code = (t) => el('code', { text: t });
      $('trust-rows').replaceChildren(
        ...policies.map((p) =>
          el(
            'tr',
            { 'data-name': p.name },
            el('td', { text: p.name }),
            el('td', null, code(p.issuer)),
            el(
              'td',
              null,
              el('ul', { class: 'plain' }, ...Object.entries(p.claims || {}).map(([k, v]) => el('li', null, code(`${k} = ${v}`)))),
            ),
            el('td', { text: p.permission }),
            el(
              'td',
              null,
              (p.routes || []).length
                ? el('ul', { class: 'plain' }, ...p.routes.map((r) => el('li', null, code(r.path), ' ', el('span', { class: 'muted', text: r.access }))))
                : el('span', { class: 'muted', text: 'all paths' }),
            ),
            el('td', { text: p.lifetime || '15m' }),
            el('td', { text: p.source }),
          ),
        ),
      );
    } catch (e) {
      if (isAuthError(e)) sessionEnded(e);
      else {
        $('trust').hidden = false;
        setError('trust-error', 'The trust policies could not be loaded. ' + plain(e));
      }
    }
  }

  function setTokens(tokens) {
    state.tokens = Array.isArray(tokens) ? tokens : [];
    const mine = state.tokens.find(isMe);
    $('whoami').textContent = mine ? `Signed in as ${mine.name}` : 'Signed in';
    render();
  }

  /** Seconds in a humantime duration ("1h 30m", "1day"), or NaN. */
  function seconds(text) {
    if (typeof text === 'number') return text;
    const units = {
      s: 1, sec: 1, secs: 1, second: 1, seconds: 1,
      m: 60, min: 60, mins: 60, minute: 60, minutes: 60,
      h: 3600, hr: 3600, hrs: 3600, hour: 3600, hours: 3600,
      d: 86400, day: 86400, days: 86400,
      w: 604800, week: 604800, weeks: 604800,
      M: 2630016, month: 2630016, months: 2630016,
      y: 31557600, year: 31557600, years: 31557600,
      ms: 0.001, us: 0.000001, ns: 0.000000001,
    };
    let total = 0;
    let matched = false;
    const re = /(\d+)\s*([A-Za-z]+)/g;
    let m;
    while ((m = re.exec(String(text))) !== null) {
      const u = units[m[2]] ?? units[m[2].toLowerCase()];
      if (u === undefined) return NaN;
      total += Number(m[1]) * u;
      matched = true;
    }
    return matched ? total : NaN;
  }

  function periodLabel(period) {
    const s = seconds(period);
    return PERIOD_NAMES[s] || String(period);
  }

  function rateText(r) {
    if (r === null || r === undefined) return 'default';
    if (r === 'unlimited') return 'unlimited';
    return `${r.requests} per ${periodLabel(r.period)}`;
  }

  /** Bytes in binary units (1.5 MiB). */
  function sizeText(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
  }

  /** The quota line under the rate limit: used of each limit this period, and the reset. */
  function quotaMarks(t) {
    const q = t.quota;
    if (!q) return [];
    const used = q.used || { requests: 0, bytes: 0 };
    const parts = [];
    if (q.requests !== null && q.requests !== undefined) parts.push(`${used.requests} of ${q.requests} requests`);
    if (q.bytes !== null && q.bytes !== undefined) parts.push(`${sizeText(used.bytes)} of ${sizeText(q.bytes)}`);
    const over =
      (q.requests !== null && q.requests !== undefined && used.requests >= q.requests) ||
      (q.bytes !== null && q.bytes !== undefined && used.bytes >= q.bytes);
    const marks = [el('span', { class: 'mark quota' + (over ? ' soon' : ''), text: `quota: ${parts.join(', ')} per ${periodLabel(q.period)}` })];
    if (q.resets_at) {
      marks.push(el('span', { class: 'mark', text: `resets ${dateTimeFmt.format(new Date(q.resets_at * 1000))}` }));
    }
    return marks;
  }

  function rateValue(r) {
    if (r === null || r === undefined) return -1;
    if (r === 'unlimited') return Infinity;
    return r.requests / (seconds(r.period) || 1);
  }

  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  /** A date in the table; the exact time is in its title (and the datetime attribute). */
  function timeEl(iso) {
    const d = new Date(iso);
    return el('time', { dateTime: iso, title: dateTimeFmt.format(d), text: dateFmt.format(d) });
  }

  function agoText(iso) {
    const ms = Date.now() - new Date(iso).getTime();
    if (ms < 60000) return 'just now';
    if (ms < 3600000) return `${Math.floor(ms / 60000)} min ago`;
    if (ms < DAY) return `${Math.floor(ms / 3600000)} h ago`;
    const days = Math.floor(ms / DAY);
    return `${days} day${days === 1 ? '' : 's'} ago`;
  }

  /** True when the token expires within 7 days and has not expired yet. */
  function expiresSoon(t) {
    if (!t.expires_at || t.expired) return false;
    const ms = new Date(t.expires_at).getTime() - Date.now();
    return ms > 0 && ms < 7 * DAY;
  }

  function expiresCell(t) {
    if (!t.expires_at) return [el('span', { text: 'never' })];
    const ms = new Date(t.expires_at).getTime() - Date.now();
    if (t.expired || ms <= 0) {
      return [el('strong', { class: 'mark expired', text: 'expired' }), ' ', timeEl(t.expires_at)];
    }
    let left;
    if (ms < DAY) {
      const h = Math.ceil(ms / 3600000);
      left = `expires in ${h} hour${h === 1 ? '' : 's'}`;
    } else {
      const days = Math.ceil(ms / DAY);
      left = `expires in ${days} day${days === 1 ? '' : 's'}`;
    }
    return [
      timeEl(t.expires_at),
      el('span', { class: 'mark' + (ms < 7 * DAY ? ' soon' : ''), text: left }),
    ];
  }

  /** While a regeneration's overlap lasts: until when the previous secret still works. */
  function previousSecret(t) {
    if (!t.previous_valid_until) return [];
    const d = new Date(t.previous_valid_until);
    return [
      el('div', {
        class: 'mark previous-secret',
        title: dateTimeFmt.format(d),
        text: `previous secret valid until ${dateTimeFmt.format(d)}`,
      }),
    ];
  }

  function sortValue(t, key) {
    switch (key) {
      case 'name':
        return t.name.toLowerCase();
      case 'permission':
        return PERMISSION_ORDER[t.permission] ?? 9;
      case 'rate_limit':
        return rateValue(t.rate_limit);
      case 'created_at':
        return t.created_at ? Date.parse(t.created_at) : -Infinity;
      case 'last_used_at':
        return t.last_used_at ? Date.parse(t.last_used_at) : -Infinity;
      case 'expires_at':
        return t.expires_at ? Date.parse(t.expires_at) : Infinity;
      case 'source':
        return t.source;
      default:
        return 0;
    }
  }

  function compare(a, b) {
    const { key, dir } = state.sort;
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.name.localeCompare(b.name);
  }

  function countText() {
    const n = state.tokens.length;
    return `${n} token${n === 1 ? '' : 's'}.`;
  }

  function actionButton(label, name, handler, cls) {
    const b = el(
      'button',
      { type: 'button', class: cls || 'secondary' },
      label,
      el('span', { class: 'visually-hidden', text: ' ' + name }),
    );
    b.addEventListener('click', handler);
    return b;
  }

  function row(t) {
    const you = isMe(t);
    const soon = expiresSoon(t);
    const nameCell = el(
      'th',
      { scope: 'row' },
      el('span', { class: 'name', text: t.name }),
      you ? el('span', { class: 'tag', text: 'you' }) : null,
      soon ? el('span', { class: 'tag expiring', text: 'expires soon' }) : null,
      t.disabled ? el('span', { class: 'tag disabled', text: 'disabled' }) : null,
    );
    const routes = (t.routes || []).length
      ? el(
          'ul',
          { class: 'plain' },
          ...t.routes.map((r) =>
            el('li', null, el('code', { text: r.path }), ' ', el('span', { class: 'muted', text: r.access })),
          ),
        )
      : el('span', { class: 'muted', text: 'all paths' });
    const clients = (t.allowed_ips || []).length
      ? el('ul', { class: 'plain' }, ...t.allowed_ips.map((n) => el('li', null, el('code', { text: n }))))
      : el('span', { class: 'muted', text: 'any address' });
    const packages = (t.packages || []).length
      ? el('ul', { class: 'plain' }, ...t.packages.map((p) => el('li', null, el('code', { text: p }))))
      : el('span', { class: 'muted', text: 'all packages' });
    const actions = el('td', { class: 'row-actions' });
    actions.append(actionButton('Usage', t.name, () => openUsage(t)));
    if (t.source === 'oidc') {
      // Minted by trusted publishing: short-lived; it can be disabled or revoked early.
      actions.append(
        actionButton(t.disabled ? 'Enable' : 'Disable', t.name, (ev) => toggleDisabled(t, ev.currentTarget)),
        actionButton('Revoke', t.name, () => openConfirm('revoke', t), 'danger'),
      );
    } else if (t.source === 'database') {
      actions.append(
        actionButton('Edit', t.name, () => openForm(t)),
        actionButton(t.disabled ? 'Enable' : 'Disable', t.name, (ev) => toggleDisabled(t, ev.currentTarget)),
        actionButton('Regenerate', t.name, () => openConfirm('regenerate', t)),
        actionButton('Revoke', t.name, () => openConfirm('revoke', t), 'danger'),
      );
    } else {
      actions.append(
        el('span', {
          class: 'muted',
          text:
            t.source === 'file'
              ? 'Read-only: defined in a token file; edit the file to change it.'
              : 'Read-only: the bootstrap token lives in memory; change TOLLGATE_BOOTSTRAP_TOKEN.',
        }),
      );
    }
    return el(
      'tr',
      { 'data-id': t.id, 'data-name': t.name, class: soon ? 'expiring-soon' : '' },
      nameCell,
      el('td', { class: t.description ? 'description' : 'description muted', text: t.description || '—' }),
      el('td', { text: t.permission }),
      el('td', null, routes),
      el('td', null, clients),
      el('td', null, packages),
      el('td', null, el('span', { text: rateText(t.rate_limit) }), ...quotaMarks(t)),
      el('td', null, t.created_at ? timeEl(t.created_at) : el('span', { class: 'muted', text: 'unknown' })),
      el(
        'td',
        null,
        ...(t.last_used_at
          ? [
              timeEl(t.last_used_at),
              el('span', { class: 'mark', text: agoText(t.last_used_at) }),
              ...lastClient(t),
            ]
          : [el('span', { class: 'muted', text: 'never' })]),
      ),
      el('td', null, ...expiresCell(t), ...previousSecret(t)),
      el('td', null, t.source, ...oidcOrigin(t)),
      actions,
    );
  }

  /** For a minted token: the trust policy and the CI job it was minted for, as text. */
  function oidcOrigin(t) {
    const o = t.oidc;
    if (!o) return [];
    const parts = [`policy ${o.policy}`, o.repository, o.run_id && `run ${o.run_id}`].filter(Boolean);
    return [el('div', { class: 'muted oidc-origin', title: o.subject || '', text: parts.join(' · ') })];
  }

  /** The address and user agent of the last use, as text (never HTML), when known. */
  function lastClient(t) {
    const parts = [t.last_used_ip, t.last_used_user_agent].filter(Boolean);
    return parts.length
      ? [el('div', { class: 'muted last-client', title: parts.join(' · '), text: parts.join(' · ') })]
      : [];
  }

  function render() {
    const f = state.filter.trim().toLowerCase();
    const shown = state.tokens.filter((t) => t.name.toLowerCase().includes(f)).sort(compare);
    const body = $('token-rows');
    body.replaceChildren(...shown.map(row));
    if (!shown.length) {
      body.append(
        el(
          'tr',
          null,
          el('td', {
            colSpan: 10,
            class: 'empty',
            text: state.tokens.length ? 'No token name matches the filter.' : 'No tokens yet. Create one with “New token”.',
          }),
        ),
      );
    }
    $('count').textContent = f
      ? `${shown.length} of ${state.tokens.length} tokens match “${state.filter.trim()}”.`
      : countText();
    for (const th of document.querySelectorAll('#token-table th[data-sort]')) {
      const active = th.dataset.sort === state.sort.key;
      if (active) th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
      th.querySelector('button').dataset.dir = active ? (state.sort.dir > 0 ? 'asc' : 'desc') : '';
    }
  }

  // ---------------------------------------------------------------------------------------
  // Create / edit
  // ---------------------------------------------------------------------------------------

  const FORM_ERRORS = {
    name: 'f-name-error',
    description: 'f-description-error',
    permission: 'f-permission-error',
    routes: 'f-routes-error',
    expiry: 'f-expiry-error',
    rate: 'f-rate-error',
    ips: 'f-allowed-ips-error',
    packages: 'f-packages-error',
    form: 'f-form-error',
  };
  const FORM_FOCUS = {
    name: 'f-name',
    description: 'f-description',
    permission: 'f-permission',
    routes: 'f-add-route',
    expiry: 'f-expiry',
    rate: 'f-rate-requests',
    ips: 'f-allowed-ips',
    packages: 'f-packages',
    form: 'f-submit',
  };

  function clearFormErrors() {
    for (const id of Object.values(FORM_ERRORS)) setError(id, '');
  }

  let routeSeq = 0;
  function addRoute(path = '', access = 'read', focus = true) {
    const n = ++routeSeq;
    const list = $('f-routes');
    const pathInput = el('input', {
      id: `f-route-path-${n}`,
      type: 'text',
      value: path,
      spellcheck: false,
      autocomplete: 'off',
      placeholder: '/p2/acme/*',
      class: 'route-path',
    });
    const accessSelect = el(
      'select',
      { id: `f-route-access-${n}`, class: 'route-access' },
      el('option', { value: 'read', text: 'read' }),
      el('option', { value: 'write', text: 'write' }),
      el('option', { value: 'none', text: 'none (deny)' }),
    );
    accessSelect.value = access;
    const item = el(
      'li',
      { class: 'route' },
      el('label', { htmlFor: pathInput.id, text: 'Path' }),
      pathInput,
      el('label', { htmlFor: accessSelect.id, text: 'Access' }),
      accessSelect,
    );
    const remove = el('button', { type: 'button', class: 'secondary' }, 'Remove', el('span', { class: 'visually-hidden' }));
    const label = () => {
      remove.lastChild.textContent = ` route ${pathInput.value || '(empty)'}`;
    };
    label();
    pathInput.addEventListener('input', label);
    remove.addEventListener('click', () => {
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      (next ? next.querySelector('input') : $('f-add-route')).focus();
    });
    item.append(remove);
    list.append(item);
    if (focus) pathInput.focus();
  }

  function isoDay(d) {
    return d.toISOString().slice(0, 10);
  }

  function setRate(r) {
    for (const o of [...$('f-rate-period').options]) if (o.dataset.custom) o.remove();
    if (r === null || r === undefined) {
      $('f-rate-default').checked = true;
    } else if (r === 'unlimited') {
      $('f-rate-unlimited').checked = true;
    } else {
      $('f-rate-custom').checked = true;
      $('f-rate-requests').value = String(r.requests);
      const s = seconds(r.period);
      const period = $('f-rate-period');
      if (![...period.options].some((o) => Number(o.value) === s)) {
        period.append(el('option', { value: String(s), text: String(r.period), 'data-custom': '1' }));
      }
      period.value = String(s);
    }
    syncRate();
  }

  function syncRate() {
    const custom = $('f-rate-custom').checked;
    $('f-rate-requests').disabled = !custom;
    $('f-rate-period').disabled = !custom;
  }

  function openForm(t) {
    state.editing = t || null;
    const form = $('token-form');
    form.reset();
    clearFormErrors();
    $('f-routes').replaceChildren();
    const editing = Boolean(t);
    $('token-dialog-title').textContent = editing ? `Edit “${t.name}”` : 'New token';
    $('f-submit').textContent = editing ? 'Save changes' : 'Create token';
    $('f-expiry-group').hidden = editing;
    $('f-expiry-fixed').hidden = !editing;
    const tomorrow = new Date(Date.now() + DAY);
    $('f-expiry-date').min = isoDay(tomorrow);
    syncExpiry();
    if (editing) {
      $('f-name').value = t.name;
      $('f-description').value = t.description || '';
      $('f-permission').value = t.permission;
      for (const r of t.routes || []) addRoute(r.path, r.access, false);
      $('f-expiry-fixed').textContent = t.expires_at
        ? `Expires ${dateTimeFmt.format(new Date(t.expires_at))}. The expiry is chosen at creation and cannot be changed; create a new token instead.`
        : 'Never expires. The expiry is chosen at creation and cannot be changed.';
      setRate(t.rate_limit);
      $('f-allowed-ips').value = (t.allowed_ips || []).join(', ');
      $('f-packages').value = (t.packages || []).join(', ');
    } else {
      setRate(null);
    }
    $('token-dialog').showModal();
    $('f-name').focus();
  }

  function syncExpiry() {
    const date = $('f-expiry').value === 'date';
    $('f-expiry-date-field').hidden = !date;
    $('f-expiry-date').required = date;
  }

  /** The request body, or the first problem found before asking the server. */
  function collectForm() {
    const problems = [];
    const name = $('f-name').value.trim();
    if (!name) problems.push(['name', 'Enter a name.']);
    else if (!NAME_RE.test(name)) {
      problems.push(['name', 'A name may only hold letters, digits, “-”, “_”, “.” and “@”, at most 64 characters.']);
    }
    const description = $('f-description').value.trim();
    const routes = [];
    for (const item of $('f-routes').children) {
      const path = item.querySelector('.route-path').value.trim();
      const access = item.querySelector('.route-access').value;
      if (!path) {
        problems.push(['routes', 'A route has no path: enter one (starting with “/”) or remove the row.']);
        break;
      }
      if (!path.startsWith('/')) {
        problems.push(['routes', `The route “${path}” must start with “/”.`]);
        break;
      }
      routes.push({ path, access });
    }
    let rate = null;
    if ($('f-rate-unlimited').checked) rate = 'unlimited';
    else if ($('f-rate-custom').checked) {
      const n = Number($('f-rate-requests').value);
      if (!Number.isInteger(n) || n < 1 || n > 4294967295) {
        problems.push(['rate', 'Enter a whole number of requests, at least 1.']);
      }
      rate = { requests: n, period: Number($('f-rate-period').value) };
    }
    // Checked by the server (400 names the entry); here only split into a list.
    const allowedIps = $('f-allowed-ips')
      .value.split(/[\s,]+/)
      .filter((s) => s !== '');
    // Checked by the server too (400 names the pattern); here only split into a list.
    const packages = $('f-packages')
      .value.split(/[\s,]+/)
      .filter((s) => s !== '');
    const body = {
      name,
      permission: $('f-permission').value,
      routes,
      rate_limit: rate,
      allowed_ips: allowedIps,
      packages,
    };
    if (state.editing) {
      body.description = description || null;
    } else {
      if (description) body.description = description;
      if (rate === null) delete body.rate_limit;
      const choice = $('f-expiry').value;
      if (choice === 'date') {
        const d = $('f-expiry-date').value;
        if (!d) problems.push(['expiry', 'Pick the expiry date.']);
        else if (d <= isoDay(new Date())) problems.push(['expiry', 'The expiry date must lie in the future.']);
        body.expires_in = d;
      } else {
        body.expires_in = choice;
      }
    }
    return { body, problems };
  }

  function showFormProblems(problems) {
    for (const [field, msg] of problems) {
      if (!$(FORM_ERRORS[field]).textContent) setError(FORM_ERRORS[field], msg);
    }
    $(FORM_FOCUS[problems[0][0]]).focus();
  }

  async function submitForm(ev) {
    ev.preventDefault();
    clearFormErrors();
    const { body, problems } = collectForm();
    if (problems.length) {
      showFormProblems(problems);
      return;
    }
    const button = $('f-submit');
    busy(button, true);
    const editing = state.editing;
    try {
      if (editing) {
        const t = await api('PATCH', `${API}/${encodeURIComponent(editing.id)}`, body);
        $('token-dialog').close();
        await load();
        announce(`Saved the changes to “${t.name}”.`);
      } else {
        const t = await api('POST', API, body);
        $('token-dialog').close();
        await load();
        showReveal(t, 'created');
      }
    } catch (e) {
      if (isAuthError(e)) {
        sessionEnded(e);
        return;
      }
      if (e.code === 'not_found') load();
      const field = fieldOf(e);
      showFormProblems([[field, plain(e)]]);
    } finally {
      busy(button, false);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Disable / enable: one PATCH, no confirmation (it is undone the same way)
  // ---------------------------------------------------------------------------------------

  async function toggleDisabled(token, button) {
    const disabled = !token.disabled;
    busy(button, true);
    try {
      await api('PATCH', `${API}/${encodeURIComponent(token.id)}`, { disabled });
      if (disabled && isMe(token)) {
        signOut(`You disabled “${token.name}”, the token you were signed in with.`);
        return;
      }
      await load();
      announce(
        disabled
          ? `Disabled “${token.name}”. It is refused until enabled again.`
          : `Enabled “${token.name}”. It works again.`,
      );
    } catch (e) {
      if (isAuthError(e)) {
        sessionEnded(e);
        return;
      }
      announce(plain(e));
      if (e.code === 'not_found') load();
    } finally {
      busy(button, false);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Regenerate / revoke
  // ---------------------------------------------------------------------------------------

  function openConfirm(kind, t) {
    state.confirm = { kind, token: t };
    setError('confirm-error', '');
    const self = isMe(t);
    $('confirm-overlap-field').hidden = kind !== 'regenerate';
    $('confirm-overlap').value = '';
    if (kind === 'revoke') {
      $('confirm-title').textContent = `Revoke “${t.name}”?`;
      $('confirm-text').textContent =
        `The token “${t.name}” stops working at once and cannot be restored; clients using it will be refused.` +
        (self ? ' This is the token you are signed in with: you will be signed out.' : '');
      $('confirm-ok').textContent = `Revoke ${t.name}`;
    } else {
      $('confirm-title').textContent = `Regenerate “${t.name}”?`;
      $('confirm-text').textContent =
        `A new secret replaces the current one of “${t.name}” at once: clients using the old one will be refused until they get the new one. Its name, permission, routes and expiry stay the same.` +
        (self ? ' This is the token you are signed in with: this tab switches to the new secret.' : '');
      $('confirm-ok').textContent = `Regenerate ${t.name}`;
    }
    $('confirm-dialog').showModal();
    $('confirm-dialog').querySelector('[data-close]').focus();
  }

  async function submitConfirm(ev) {
    ev.preventDefault();
    if (!state.confirm) return;
    const { kind, token } = state.confirm;
    const self = isMe(token);
    const button = $('confirm-ok');
    busy(button, true);
    setError('confirm-error', '');
    const url = `${API}/${encodeURIComponent(token.id)}`;
    try {
      if (kind === 'revoke') {
        await api('DELETE', url);
        $('confirm-dialog').close();
        if (self) {
          signOut(`You revoked “${token.name}”, the token you were signed in with.`);
          return;
        }
        await load();
        announce(`Revoked “${token.name}”. It no longer works.`);
        $('new-token').focus();
      } else {
        const overlap = $('confirm-overlap').value;
        const t = await api('POST', `${url}/regenerate`, overlap ? { overlap } : undefined);
        if (self) {
          // The old secret no longer works, this tab's included: continue with the new one.
          session.set(AUTH_KEY, 'Bearer ' + t.token);
          session.set(WHO_KEY, JSON.stringify({ id: t.id }));
        }
        $('confirm-dialog').close();
        await load();
        showReveal(t, 'regenerated');
      }
    } catch (e) {
      if (isAuthError(e)) {
        sessionEnded(e);
        return;
      }
      setError('confirm-error', plain(e));
      if (e.code === 'not_found') load();
    } finally {
      busy(button, false);
    }
  }

  // ---------------------------------------------------------------------------------------
  // The token, shown once, with client snippets
  // ---------------------------------------------------------------------------------------

  let revealed = null; // {name, token} while the reveal dialog is open

  function cleanHost(h) {
    return h
      .trim()
      .replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
      .replace(/\/.*$/, '');
  }

  function updateSnippets() {
    if (!revealed) return;
    const host = cleanHost($('reveal-host').value) || 'HOST';
    const reg = $('reveal-registry').value.trim() || 'tollgate';
    const envName = 'CARGO_REGISTRIES_' + reg.toUpperCase().replace(/[^A-Z0-9]/g, '_') + '_TOKEN';
    const tok = revealed.token;
    $('sn-composer').textContent = `composer config http-basic.${host} token ${tok}`;
    $('sn-npm').textContent = `//${host}/:_authToken=${tok}`;
    $('sn-pip').textContent = `https://token:${tok}@${host}/simple/`;
    $('sn-cargo').textContent =
      `[registries.${reg}]\nindex = "sparse+https://${host}/index/"\ncredential-provider = "cargo:token"`;
    $('sn-cargo-env').textContent = `export ${envName}=${tok}`;
  }

  function showReveal(t, kind) {
    revealed = { name: t.name, token: t.token };
    $('reveal-title').textContent =
      kind === 'created' ? `Token created: ${t.name}` : `New secret for ${t.name}`;
    $('reveal-token').value = t.token;
    $('reveal-host').value = local.get(HOST_KEY) || location.hostname;
    $('reveal-registry').value = local.get(REGISTRY_KEY) || 'tollgate';
    $('reveal-copy-status').textContent = '';
    updateSnippets();
    $('reveal-dialog').showModal();
    const input = $('reveal-token');
    input.focus();
    input.select();
    announce(
      kind === 'created'
        ? `Created “${t.name}”. Copy the token now: it will not be shown again.`
        : t.previous_valid_until
          ? `Regenerated “${t.name}”. The old secret works until ${dateTimeFmt.format(new Date(t.previous_valid_until))} or until the new one is first used; copy the new one now.`
          : `Regenerated “${t.name}”. The old secret no longer works; copy the new one now.`,
    );
  }

  function forgetRevealed() {
    revealed = null;
    $('reveal-token').value = '';
    for (const id of ['sn-composer', 'sn-npm', 'sn-pip', 'sn-cargo', 'sn-cargo-env']) $(id).textContent = '';
  }

  async function copyFrom(id) {
    const source = $(id);
    const text = source instanceof HTMLInputElement ? source.value : source.textContent;
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        ok = true;
      } catch {
        ok = false;
      }
    }
    if (!ok) {
      // Not a secure context (plain http on another host): select, and copy the old way.
      if (source instanceof HTMLInputElement) {
        source.focus();
        source.select();
      } else {
        const range = document.createRange();
        range.selectNodeContents(source);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
    }
    $('reveal-copy-status').textContent = ok
      ? 'Copied to the clipboard.'
      : 'The browser blocked copying: the text is selected, copy it with Ctrl+C (⌘C).';
  }

  // ---------------------------------------------------------------------------------------
  // Usage: a token's requests per day (an SVG bar chart) and the search by package or path
  // ---------------------------------------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs, ...children) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) if (c) e.append(c);
    return e;
  };

  function bytesText(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n) || 0;
    let u = 0;
    while (v >= 1024 && u + 1 < units.length) {
      v /= 1024;
      u += 1;
    }
    return u ? `${v.toFixed(1)} ${units[u]}` : `${v} B`;
  }

  const addressText = (n, capped) => (capped ? `${n}+` : String(n));

  /** The last 30 UTC days as YYYY-MM-DD, oldest first. */
  function lastDays(n = 30) {
    const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
    return Array.from({ length: n }, (_, i) => new Date(today - (n - 1 - i) * DAY).toISOString().slice(0, 10));
  }

  /** Bars of requests per day; every bar carries its numbers as a title (and for screen readers). */
  function usageChart(days) {
    const byDay = new Map(days.map((d) => [d.day, d]));
    const all = lastDays();
    const max = Math.max(1, ...days.map((d) => d.requests));
    const W = 600;
    const H = 160;
    const bw = W / all.length;
    const bars = all.map((day, i) => {
      const d = byDay.get(day);
      const n = d ? d.requests : 0;
      const h = n ? Math.max(2, Math.round(((H - 20) * n) / max)) : 0;
      const label = d
        ? `${day}: ${n} requests, ${bytesText(d.bytes_sent)}, ${addressText(d.addresses, d.addresses_capped)} addresses`
        : `${day}: no requests`;
      return svg(
        'rect',
        { x: (i * bw + 1).toFixed(1), y: H - h, width: (bw - 2).toFixed(1), height: h, class: 'bar', 'data-day': day, 'data-requests': n },
        svg('title', null, document.createTextNode(label)),
      );
    });
    const axis = svg('line', { x1: 0, y1: H, x2: W, y2: H, class: 'axis' });
    const top = svg('text', { x: 2, y: 12, class: 'chart-label' }, document.createTextNode(`${max}`));
    const total = days.reduce((a, d) => a + d.requests, 0);
    return svg(
      'svg',
      { viewBox: `0 0 ${W} ${H + 1}`, role: 'img', 'aria-label': `${total} requests in the last 30 days; most in one day: ${max}` },
      ...bars,
      axis,
      top,
    );
  }

  async function openUsage(t) {
    const d = $('usage-dialog');
    $('usage-dialog-title').textContent = `Usage of ${t.name}`;
    $('usage-dialog-summary').textContent = 'Loading…';
    setError('usage-dialog-error', '');
    $('usage-chart').replaceChildren();
    $('usage-path-rows').replaceChildren();
    d.showModal();
    try {
      const u = await api('GET', `${API}/${encodeURIComponent(t.id)}/usage?granularity=day`);
      const total = u.days.reduce((a, x) => a + x.requests, 0);
      const sent = u.days.reduce((a, x) => a + x.bytes_sent, 0);
      $('usage-dialog-summary').textContent = `${total} requests, ${bytesText(sent)} sent from ${u.from} to ${u.to} (UTC).`;
      $('usage-chart').replaceChildren(usageChart(u.days));
      $('usage-path-rows').replaceChildren(
        ...(u.paths.length
          ? u.paths.map((p) =>
              el(
                'tr',
                null,
                el('td', null, ...keyCell(p)),
                el('td', { text: String(p.requests) }),
                el('td', { text: bytesText(p.bytes_sent) }),
                el('td', null, p.last_at ? timeEl(p.last_at) : null),
              ),
            )
          : [el('tr', null, el('td', { colSpan: 4, class: 'empty', text: 'No requests in the last 30 days.' }))]),
      );
    } catch (e) {
      if (isAuthError(e)) return sessionEnded(e);
      $('usage-dialog-summary').textContent = '';
      setError('usage-dialog-error', plain(e));
    }
  }

  // A ledger key: a package (name, version, ecosystem) or a path.
  function keyCell(p) {
    if (!p.package) return [el('code', { text: p.key })];
    const name = p.version ? `${p.package}@${p.version}` : p.package;
    return [el('code', { text: name }), ' ', el('span', { class: 'muted', text: p.version ? p.ecosystem : `${p.ecosystem}, metadata` })];
  }

  function versionsText(versions) {
    if (!versions) return '';
    return versions.map((v) => `${v.version ?? 'metadata'} ×${v.requests}`).join(', ');
  }

  async function searchUsage(ev) {
    ev.preventDefault();
    const path = $('usage-path').value.trim();
    const pkg = $('usage-package').value.trim();
    const version = $('usage-version').value.trim();
    setError('usage-error', '');
    let q;
    if (pkg && path) {
      setError('usage-error', 'Search by a package or by a path, not both.');
      $('usage-path').focus();
      return;
    } else if (pkg) {
      q = new URLSearchParams({ package: pkg });
      if (version) q.set('version', version);
    } else if (version) {
      setError('usage-error', 'A version needs its package, such as acme/widget.');
      $('usage-package').focus();
      return;
    } else if (path.startsWith('/')) {
      q = new URLSearchParams({ path });
    } else {
      setError('usage-error', 'Enter a package (acme/widget) or a path that starts with /, such as /packages.json.');
      (path ? $('usage-path') : $('usage-package')).focus();
      return;
    }
    if ($('usage-from').value) q.set('from', $('usage-from').value);
    if ($('usage-to').value) q.set('to', $('usage-to').value);
    const button = $('usage-submit');
    busy(button, true);
    try {
      const r = await api('GET', `/api/v1/usage?${q}`);
      const names = new Map(state.tokens.map((t) => [t.id, t.name]));
      $('usage-rows').replaceChildren(
        ...r.tokens.map((x) =>
          el(
            'tr',
            { 'data-id': x.token_id },
            el('th', { scope: 'row' }, el('span', { class: 'name', text: x.token_name || names.get(x.token_id) || x.token_id }), ' ', el('code', { class: 'muted', text: x.token_id })),
            el('td', { text: String(x.requests) }),
            el('td', { text: bytesText(x.bytes_sent) }),
            el('td', { text: String(x.days) }),
            el('td', { text: addressText(x.addresses, x.addresses_capped) }),
            el('td', null, x.first_at ? timeEl(x.first_at) : null),
            el('td', null, x.last_at ? timeEl(x.last_at) : null),
            el('td', { class: 'versions', text: versionsText(x.versions) }),
          ),
        ),
      );
      const what = r.path ?? (r.version ? `${r.package} ${r.version}` : r.package);
      $('usage-table').hidden = !r.tokens.length;
      $('usage-summary').textContent = r.tokens.length
        ? `${r.tokens.length} ${r.tokens.length === 1 ? 'token' : 'tokens'} fetched ${what} from ${r.from} to ${r.to} (UTC).`
        : `No token fetched ${what} from ${r.from} to ${r.to} (UTC).`;
    } catch (e) {
      if (isAuthError(e)) return sessionEnded(e);
      setError('usage-error', plain(e));
    } finally {
      busy(button, false);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------------------

  function init() {
    $('usage-form').addEventListener('submit', searchUsage);
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut());
    $('refresh').addEventListener('click', async () => {
      if (await load()) announce('Refreshed. ' + countText());
    });
    $('new-token').addEventListener('click', () => openForm(null));
    $('filter').addEventListener('input', (e) => {
      state.filter = e.target.value;
      render();
    });
    for (const th of document.querySelectorAll('#token-table th[data-sort]')) {
      th.querySelector('button').addEventListener('click', () => {
        const key = th.dataset.sort;
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
        render();
        const dir = state.sort.dir > 0 ? 'ascending' : 'descending';
        announce(`Sorted by ${th.textContent.trim().toLowerCase()}, ${dir}.`);
      });
    }
    $('token-form').addEventListener('submit', submitForm);
    $('f-add-route').addEventListener('click', () => addRoute());
    $('f-expiry').addEventListener('change', syncExpiry);
    for (const id of ['f-rate-default', 'f-rate-unlimited', 'f-rate-custom']) {
      $(id).addEventListener('change', syncRate);
    }
    $('confirm-form').addEventListener('submit', submitConfirm);
    $('confirm-dialog').addEventListener('close', () => {
      state.confirm = null;
    });
    $('reveal-form').addEventListener('submit', (e) => {
      e.preventDefault();
      $('reveal-dialog').close();
    });
    $('reveal-dialog').addEventListener('close', () => {
      forgetRevealed();
      $('new-token').focus();
    });
    $('reveal-host').addEventListener('input', () => {
      const h = cleanHost($('reveal-host').value);
      if (h) local.set(HOST_KEY, h);
      else local.del(HOST_KEY);
      updateSnippets();
    });
    $('reveal-registry').addEventListener('input', () => {
      const r = $('reveal-registry').value.trim();
      if (r) local.set(REGISTRY_KEY, r);
      else local.del(REGISTRY_KEY);
      updateSnippets();
    });
    for (const b of document.querySelectorAll('[data-copy]')) {
      b.addEventListener('click', () => copyFrom(b.dataset.copy));
    }
    for (const b of document.querySelectorAll('dialog [data-close]')) {
      b.addEventListener('click', () => b.closest('dialog').close());
    }

    if (session.get(AUTH_KEY)) {
      showApp();
      load();
    } else {
      showSignIn();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
