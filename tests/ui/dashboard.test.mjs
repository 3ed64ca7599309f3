// Browser test of the token dashboard: the real `target/debug/tollgate` binary, a tiny
// upstream, and Debian's headless chromium driven by playwright-core.
//
//   node --test tests/ui/dashboard.test.mjs        (or tests/ui/run.sh, which installs what it needs)
//
// Environment: TOLLGATE_BIN (default <repo>/target/debug/tollgate), CHROMIUM (default
// /usr/bin/chromium), UI_TEST_OUTPUT (screenshots; default <repo>/target/test-output/ui).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = process.env.TOLLGATE_BIN || path.join(REPO, 'target', 'debug', 'tollgate');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.UI_TEST_OUTPUT || path.join(REPO, 'target', 'test-output', 'ui');
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
const TOKEN_RE = /^tok_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}$/;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, deadlineMs, probe) {
  const end = Date.now() + deadlineMs;
  let last;
  while (Date.now() < end) {
    try {
      if (await probe()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

const hasCurl = ['/usr/bin/curl', '/bin/curl', '/usr/local/bin/curl'].some((p) => existsSync(p));

/** The proxy's status for GET `url` with `token` as Basic `token:TOKEN` (curl, as a user would). */
function proxyStatus(url, token) {
  if (!hasCurl) {
    const headers = token ? { Authorization: 'Basic ' + Buffer.from(`token:${token}`).toString('base64') } : {};
    return fetch(url, { headers }).then(async (r) => {
      await r.arrayBuffer();
      return r.status;
    });
  }
  const args = ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10'];
  if (token) args.push('-u', `token:${token}`);
  args.push(url);
  return new Promise((resolve, reject) => {
    execFile('curl', args, (err, stdout, stderr) => {
      if (err) reject(new Error(`curl ${url}: ${err.message} ${stderr}`));
      else resolve(Number(stdout.trim()));
    });
  });
}

/** Starts the world: upstream, tollgate, browser. Returns it with a `stop()`. */
async function start() {
  assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tollgate-ui-'));
  const w = { dir, log: [], stops: [] };
  w.stop = async () => {
    for (const f of w.stops.reverse()) {
      try {
        await f();
      } catch {
        /* best effort */
      }
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // Upstream: answers 200 with a small JSON body to whatever reaches it.
    const upstream = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, path: req.url }));
    });
    await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
    w.stops.push(() => new Promise((r) => upstream.close(r)));
    const upstreamPort = upstream.address().port;

    const proxyPort = await freePort();
    const adminPort = await freePort();
    w.proxy = `http://127.0.0.1:${proxyPort}`;
    w.admin = `http://127.0.0.1:${adminPort}`;
    w.bootstrap = `admin:${crypto.randomBytes(24).toString('base64url')}`;
    w.adminAuth = 'Basic ' + Buffer.from(w.bootstrap).toString('base64');
    const config = path.join(dir, 'tollgate.yaml');
    await writeFile(
      config,
      [
        `listen: 127.0.0.1:${proxyPort}`,
        `admin_listen: 127.0.0.1:${adminPort}`,
        'upstream:',
        `  url: http://127.0.0.1:${upstreamPort}`,
        '  layouts: [{kind: composer, prefix: /, dist: ["dist/{vendor}/{package}/{version}/{file}"]}]',
        'realm: tollgate-ui-test',
        'tokens:',
        '  files: []',
        `  database: sqlite://${path.join(dir, 't.db')}`,
        'hashing: {memory_kib: 64, iterations: 1, parallelism: 1}',
        'log: {format: text, level: warn}',
        'usage: {flush_interval: 200ms}',
        'oidc:',
        '  enabled: true',
        '  audience: https://repo.example.com',
        '  policies: [{name: widget-release, issuer: "https://token.actions.githubusercontent.com", claims: {repository: acme/widget, ref: "refs/tags/v*"}, permission: write, routes: [{path: "/simple/acme-widget/**", access: write}]}]',
        '',
      ].join('\n'),
    );
    const env = { ...process.env, TOLLGATE_BOOTSTRAP_TOKEN: w.bootstrap };
    for (const k of Object.keys(env)) if (k.startsWith('TOLLGATE_') && k !== 'TOLLGATE_BOOTSTRAP_TOKEN') delete env[k];
    const child = spawn(BIN, ['--config', config, 'serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk) => {
      w.log.push(chunk.toString());
      if (w.log.length > 400) w.log.shift();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exited = null;
    child.on('exit', (code, signal) => {
      exited = { code, signal };
    });
    w.stops.push(async () => {
      if (exited) return;
      child.kill('SIGTERM');
      const done = new Promise((r) => child.once('exit', r));
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    });
    await until('tollgate /readyz', 20000, async () => {
      if (exited) throw new Error(`tollgate exited (${JSON.stringify(exited)}):\n${w.log.join('')}`);
      const r = await fetch(`${w.admin}/readyz`);
      return r.status === 200;
    });

    // Browser: a fresh profile every run.
    const profile = path.join(dir, 'chromium-profile');
    await mkdir(profile);
    w.context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1400, height: 900 },
      timeout: 30000,
    });
    w.stops.push(() => w.context.close());
    await w.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: w.admin });
    return w;
  } catch (e) {
    await w.stop();
    throw e;
  }
}

/** GET /api/v1/tokens as the bootstrap token: the server's view, independent of the page. */
async function apiTokens(w) {
  const r = await fetch(`${w.admin}/api/v1/tokens`, { headers: { Authorization: w.adminAuth } });
  assert.equal(r.status, 200, 'GET /api/v1/tokens');
  return (await r.json()).tokens;
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

test('token dashboard: sign in, create, use, edit, regenerate, revoke', { timeout: 100000 }, async (t) => {
  const w = await start();
  t.after(() => w.stop());
  await mkdir(OUT, { recursive: true });
  await rm(path.join(OUT, 'failure.png'), { force: true });
  try {
    await run(w, t);
  } catch (e) {
    // Leave evidence for a failed CI run.
    if (w.page) await w.page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
    e.message += `\n--- tollgate log (tail) ---\n${w.log.join('').slice(-4000)}`;
    throw e;
  }
});

test('usage: a token\'s chart of requests per day, and the search by package or path', { timeout: 60000 }, async (t) => {
  const w = await start();
  t.after(() => w.stop());
  await mkdir(OUT, { recursive: true });
  try {
    await runUsage(w);
  } catch (e) {
    if (w.page) await w.page.screenshot({ path: path.join(OUT, 'usage-failure.png'), fullPage: true }).catch(() => {});
    e.message += `\n--- tollgate log (tail) ---\n${w.log.join('').slice(-4000)}`;
    throw e;
  }
});

async function runUsage(w) {
  // A token used through the proxy: a package's metadata three times, one of its versions
  // twice, a file no layout names once (keyed by path), and once refused (403 on a package
  // outside its route).
  const made = await fetch(`${w.admin}/api/v1/tokens`, {
    method: 'POST',
    headers: { Authorization: w.adminAuth, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'fetcher', permission: 'read', routes: [{ path: '/p2/acme/*', access: 'read' }, { path: '/dist/acme/**', access: 'read' }] }),
  });
  assert.equal(made.status, 201);
  const { id, token } = await made.json();
  for (let i = 0; i < 3; i++) assert.equal(await proxyStatus(`${w.proxy}/p2/acme/widget.json`, token), 200);
  for (let i = 0; i < 2; i++) assert.equal(await proxyStatus(`${w.proxy}/dist/acme/widget/2.3.1/widget.zip`, token), 200);
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/readme.txt`, token), 200);
  assert.equal(await proxyStatus(`${w.proxy}/p2/other/x.json`, token), 403);
  await until('the usage flushed', 10000, async () => {
    const r = await fetch(`${w.admin}/api/v1/tokens/${id}/usage`, { headers: { Authorization: w.adminAuth } });
    const u = await r.json();
    return u.days.length === 1 && u.days[0].requests === 7;
  });

  const page = w.context.pages()[0] || (await w.context.newPage());
  w.page = page;
  page.setDefaultTimeout(10000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${w.admin}/`);
  await page.getByLabel('Manager token').fill(w.bootstrap);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const row = page.locator('#token-rows tr[data-name="fetcher"]');
  await row.waitFor();

  // The chart: 30 bars, today's holds the 4 requests, the others none.
  await row.getByRole('button', { name: 'Usage fetcher' }).click();
  const dialog = page.locator('#usage-dialog');
  await assertText(dialog.locator('#usage-dialog-summary'), /^7 requests, .* sent from /);
  const today = new Date().toISOString().slice(0, 10);
  const bars = dialog.locator('#usage-chart svg rect.bar');
  assert.equal(await bars.count(), 30);
  const todayBar = dialog.locator(`#usage-chart rect[data-day="${today}"]`);
  assert.equal(await todayBar.getAttribute('data-requests'), '7');
  assert.match(await todayBar.locator('title').textContent(), new RegExp(`^${today}: 7 requests, .*, 1 addresses$`));
  assert.ok(Number(await todayBar.getAttribute('height')) > 100, 'the tallest bar fills the chart');
  const zero = await page.evaluate(() => [...document.querySelectorAll('#usage-chart rect.bar')].filter((r) => r.getAttribute('height') === '0').length);
  assert.equal(zero, 29);
  // Packages by name (and version), with their ecosystem; a file no layout names by path.
  const paths = await dialog.locator('#usage-path-rows').innerText();
  assert.match(paths, /acme\/widget composer, metadata\s+3/);
  assert.match(paths, /acme\/widget@2\.3\.1 composer\s+2/);
  assert.match(paths, /\/p2\/acme\/readme\.txt\s+1/);
  assert.match(paths, /other\/x composer, metadata\s+1/);
  await page.screenshot({ path: path.join(OUT, 'usage-chart.png') });
  await dialog.getByRole('button', { name: 'Close' }).click();
  await dialog.waitFor({ state: 'hidden' });

  // The search by package names the token, with its requests per version; by version only
  // that version's; by path what is keyed by path; nobody, and bad input, say so.
  const search = page.locator('#usage');
  const field = (name) => search.getByLabel(name, { exact: true });
  await field('Package').fill('ACME/Widget');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-summary'), /^1 token fetched ACME\/Widget from /);
  const found = page.locator(`#usage-rows tr[data-id="${id}"]`);
  assert.match(await found.innerText(), /fetcher[\s\S]*\t5\t/);
  assert.equal(await found.locator('td.versions').innerText(), 'metadata ×3, 2.3.1 ×2');
  await page.screenshot({ path: path.join(OUT, 'usage-search.png') });
  await field('Version').fill('2.3.1');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-summary'), /^1 token fetched ACME\/Widget 2\.3\.1 from /);
  assert.match(await found.innerText(), /fetcher[\s\S]*\t2\t/);
  await field('Version').fill('9.9.9');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-summary'), /^No token fetched ACME\/Widget 9\.9\.9/);
  assert.equal(await page.locator('#usage-table').isHidden(), true);
  await field('Version').fill('');
  await field('Package').fill('');
  await field('Path').fill('/p2/acme/./readme.txt');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-summary'), /^1 token fetched \/p2\/acme\/readme\.txt from /);
  assert.match(await found.innerText(), /fetcher[\s\S]*\t1\t/);
  await field('Path').fill('/p2/acme/nothing.txt');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-summary'), /^No token fetched \/p2\/acme\/nothing\.txt/);
  await field('Path').fill('widget.json');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-error'), /starts with \//);
  await field('Path').fill('/x');
  await field('Package').fill('acme/widget');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-error'), /not both/);
  await field('Path').fill('');
  await field('Package').fill('not a name');
  await search.getByRole('button', { name: 'Search' }).click();
  await assertText(page.locator('#usage-error'), /not a package name/);
  assert.deepEqual(await unlabelled(page), [], 'every input has a label');
  assert.deepEqual(errors, []);
}

async function run(w, t) {
  // Headers of the page and its assets.
  {
    const r = await fetch(`${w.admin}/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-security-policy'), CSP);
    assert.equal(r.headers.get('x-frame-options'), 'DENY');
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    assert.match(r.headers.get('content-type'), /^text\/html/);
    const html = await r.text();
    assert.doesNotMatch(html, /<script>|<script [^>]*>[^<]/, 'no inline script');
    for (const [p, type] of [
      ['/ui/', /^text\/html/],
      ['/ui/app.js', /^text\/javascript/],
      ['/ui/app.css', /^text\/css/],
      ['/ui/favicon.svg', /^image\/svg\+xml/],
    ]) {
      const a = await fetch(w.admin + p);
      assert.equal(a.status, 200, p);
      assert.match(a.headers.get('content-type'), type, p);
      assert.equal(a.headers.get('content-security-policy'), CSP, p);
      await a.arrayBuffer();
    }
  }

  const consoleErrors = [];
  const violations = [];
  const context = w.context;
  await context.exposeBinding('__reportCsp', (_source, v) => violations.push(v));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      // eslint-disable-next-line no-undef
      __reportCsp({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample });
    });
  });
  const page = context.pages()[0] || (await context.newPage());
  w.page = page;
  page.setDefaultTimeout(10000);
  // Chromium logs every refused fetch as a console error; the two this test provokes on purpose
  // (a wrong sign-in secret: 401, a duplicate name: 409) are listed apart and checked exactly.
  const refusals = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const refused = /^Failed to load resource: the server responded with a status of (\d+)/.exec(m.text());
    const url = m.location().url || '';
    if (refused && new URL(url, w.admin).pathname.startsWith('/api/v1/')) refusals.push(Number(refused[1]));
    else consoleErrors.push(`${m.text()} (${url})`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  const status = page.locator('#status');

  // ---- sign in: a wrong secret is refused next to the field, then the bootstrap token works.
  await page.goto(`${w.admin}/`);
  const tokenInput = page.getByLabel('Manager token');
  await tokenInput.fill('admin:not-the-secret');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await assertText(page.locator('#signin-error'), /token was refused/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.auth')), null);
  await tokenInput.fill(w.bootstrap);
  await tokenInput.press('Enter');
  const rows = page.locator('#token-rows');
  await rows.locator('tr[data-name="admin"]').waitFor();
  assert.match(await rows.locator('tr[data-name="admin"]').innerText(), /bootstrap[\s\S]*Read-only/);
  await assertText(page.locator('#whoami'), /Signed in as admin/);

  // ---- trusted publishing: the trust policies are listed (read-only), as text.
  const policy = page.locator('#trust-rows tr[data-name="widget-release"]');
  await policy.waitFor();
  assert.match(
    await policy.innerText(),
    /token\.actions\.githubusercontent\.com[\s\S]*ref = refs\/tags\/v\*[\s\S]*repository = acme\/widget[\s\S]*write[\s\S]*\/simple\/acme-widget\/\*\*[\s\S]*15m[\s\S]*file/,
  );
  assert.equal(await page.locator('#trust').isVisible(), true);
  assert.ok(await page.evaluate(() => sessionStorage.getItem('tollgate.auth')), 'kept in sessionStorage');
  assert.deepEqual(await context.cookies(), [], 'no cookies');
  assert.ok(!page.url().includes(w.bootstrap.split(':')[1]), 'token not in the URL');

  // ---- a quota (set through the API) shows under the rate limit with its usage.
  {
    const r = await fetch(`${w.admin}/api/v1/tokens`, {
      method: 'POST',
      headers: { authorization: 'Basic ' + Buffer.from(w.bootstrap).toString('base64'), 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'metered', permission: 'read', quota: { requests: 5, bytes: '1MiB', period: '1d' } }),
    });
    assert.equal(r.status, 201);
    await r.arrayBuffer();
    await page.reload();
    const metered = rows.locator('tr[data-name="metered"]');
    await metered.waitFor();
    assert.match(await metered.innerText(), /quota: 0 of 5 requests, 0 B of 1\.0 MiB per (1 ?day|1d|day)/);
    assert.match(await metered.innerText(), /resets /);
    // Gone again: the steps below count the tokens.
    const { id } = await fetch(`${w.admin}/api/v1/tokens/metered`, {
      headers: { authorization: 'Basic ' + Buffer.from(w.bootstrap).toString('base64') },
    }).then((x) => x.json());
    const d = await fetch(`${w.admin}/api/v1/tokens/${id}`, {
      method: 'DELETE',
      headers: { authorization: 'Basic ' + Buffer.from(w.bootstrap).toString('base64') },
    });
    assert.equal(d.status, 204);
    await page.reload();
    await rows.locator('tr[data-name="admin"]').waitFor();
    await rows.locator('tr[data-name="metered"]').waitFor({ state: 'detached' });
  }

  // ---- create: name, description, route, 30 days, custom rate limit.
  await page.getByRole('button', { name: 'New token' }).click();
  const form = page.locator('#token-dialog');
  await form.waitFor();
  await form.getByLabel('Name', { exact: true }).fill('ci-reader');
  await form.getByLabel('Description').fill('CI pipeline');
  await form.getByLabel('Permission').selectOption('read');
  await form.getByRole('button', { name: 'Add route' }).click();
  await form.getByLabel('Path', { exact: true }).fill('/p2/acme/*');
  await form.getByLabel('Access', { exact: true }).selectOption('read');
  await form.getByLabel('Expires').selectOption('30d');
  await form.getByLabel('Custom:').check();
  await form.getByLabel('Requests allowed per period').fill('100');
  await form.getByLabel('Period', { exact: true }).selectOption('3600');
  assert.deepEqual(await unlabelled(page), [], 'every input of the form has a label');
  await page.screenshot({ path: path.join(OUT, 'create-form.png') });
  await form.getByRole('button', { name: 'Create token' }).click();

  const reveal = page.locator('#reveal-dialog');
  await assertText(reveal.locator('#reveal-title'), /Token created: ci-reader/);
  const token1 = await reveal.getByLabel('Token', { exact: true }).inputValue();
  assert.match(token1, TOKEN_RE, 'token shown in the modal');
  assert.match(await reveal.innerText(), /will not be\s+shown again/);
  const host = reveal.getByLabel('Proxy host');
  assert.equal(await host.inputValue(), '127.0.0.1', 'host prefilled with the page hostname');
  assert.equal(await reveal.locator('#sn-composer').innerText(), `composer config http-basic.127.0.0.1 token ${token1}`);
  await host.fill('packages.example.com');
  assert.equal(await reveal.locator('#sn-npm').innerText(), `//packages.example.com/:_authToken=${token1}`);
  assert.equal(await reveal.locator('#sn-pip').innerText(), `https://token:${token1}@packages.example.com/simple/`);
  assert.match(await reveal.locator('#sn-cargo').innerText(), /\[registries\.tollgate\]\nindex = "sparse\+https:\/\/packages\.example\.com\/index\/"\ncredential-provider = "cargo:token"/);
  assert.equal(await reveal.locator('#sn-cargo-env').innerText(), `export CARGO_REGISTRIES_TOLLGATE_TOKEN=${token1}`);
  assert.equal(await page.evaluate(() => localStorage.getItem('tollgate.proxyHost')), 'packages.example.com');
  assert.deepEqual(await unlabelled(page), [], 'every input of the modal has a label');
  await reveal.getByRole('button', { name: 'Copy token' }).click();
  await assertText(reveal.locator('#reveal-copy-status'), /Copied/);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token1, 'clipboard holds the token');
  await page.screenshot({ path: path.join(OUT, 'create-modal.png') });
  await reveal.getByRole('button', { name: /I have copied it/ }).click();
  await reveal.waitFor({ state: 'hidden' });
  // The dialog's `close` event (which forgets the token) is a task queued after it hides.
  await until('the token forgotten once the modal closes', 2000, async () => (await page.locator('#reveal-token').inputValue()) === '');

  // ---- the table and the API show it.
  const row = rows.locator('tr[data-name="ci-reader"]');
  await row.waitFor();
  const rowText = await row.innerText();
  for (const want of [/CI pipeline/, /\bread\b/, /\/p2\/acme\/\*/, /any address/, /100 per hour/, /expires in 30 days/, /never/, /database/]) {
    assert.match(rowText, want, `row shows ${want}`);
  }
  await page.screenshot({ path: path.join(OUT, 'token-list.png'), fullPage: true });
  let rec = (await apiTokens(w)).find((x) => x.name === 'ci-reader');
  assert.ok(rec, 'created token listed by the API');
  assert.equal(rec.description, 'CI pipeline');
  assert.deepEqual(rec.routes, [{ path: '/p2/acme/*', access: 'read' }]);
  assert.deepEqual(rec.rate_limit, { requests: 100, period: '1h' });
  const days = (Date.parse(rec.expires_at) - Date.now()) / 86400000;
  assert.ok(days > 29.9 && days <= 30, `expires in 30 days (got ${days})`);
  assert.equal(rec.id, token1.slice(4, 16));

  // ---- the token works through the proxy, on its route only.
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token1), 200, 'new token through the proxy');
  assert.equal(await proxyStatus(`${w.proxy}/p2/other/pkg.json`, token1), 403, 'outside its route');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, null), 401, 'no token');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await assertText(status, /Refreshed\. 2 tokens\./);
  await assertText(row, /just now/);

  // ---- filter and sort.
  const filter = page.getByLabel('Filter by name');
  await filter.fill('ci-');
  await rows.locator('tr[data-name="admin"]').waitFor({ state: 'detached' });
  assert.equal(await rows.locator('tr[data-name]').count(), 1);
  await assertText(page.locator('#count'), /1 of 2 tokens match/);
  await filter.fill('');
  assert.equal(await rows.locator('tr[data-name]').count(), 2);
  const nameHeader = page.locator('th[data-sort="name"]');
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'ascending');
  assert.deepEqual(await rows.locator('tr[data-name]').evaluateAll((r) => r.map((x) => x.dataset.name)), ['admin', 'ci-reader']);
  await nameHeader.getByRole('button').click();
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
  assert.deepEqual(await rows.locator('tr[data-name]').evaluateAll((r) => r.map((x) => x.dataset.name)), ['ci-reader', 'admin']);
  await nameHeader.getByRole('button').click();

  // ---- edit the description (keyboard: the dialog opens focused on the name).
  await row.getByRole('button', { name: 'Edit ci-reader' }).click();
  await assertText(form.locator('#token-dialog-title'), /Edit “ci-reader”/);
  assert.equal(await form.getByLabel('Name', { exact: true }).evaluate((e) => e === document.activeElement), true);
  assert.equal(await form.getByLabel('Path', { exact: true }).inputValue(), '/p2/acme/*', 'routes prefilled');
  assert.ok(await form.getByLabel('Custom:').isChecked(), 'rate limit prefilled');
  assert.ok(await form.locator('#f-expiry-group').isHidden(), 'expiry not editable');
  await form.getByLabel('Description').fill('CI pipeline (nightly)');
  await form.getByLabel('Allowed client networks').fill('127.0.0.1, ::1');
  await form.getByLabel('Packages').fill('acme/pkg, acme/internal-*');
  // A deny rule under the broader route: access "none".
  await form.getByRole('button', { name: 'Add route' }).click();
  await form.getByLabel('Path', { exact: true }).last().fill('/p2/acme/internal-*');
  await form.getByLabel('Access', { exact: true }).last().selectOption('none');
  await form.getByRole('button', { name: 'Save changes' }).click();
  await assertText(status, /Saved the changes to “ci-reader”/);
  await assertText(row.locator('td').first(), /CI pipeline \(nightly\)/);
  rec = (await apiTokens(w)).find((x) => x.name === 'ci-reader');
  assert.equal(rec.description, 'CI pipeline (nightly)');
  assert.deepEqual(rec.rate_limit, { requests: 100, period: '1h' }, 'rate limit kept');
  assert.deepEqual(rec.allowed_ips, ['127.0.0.1/32', '::1/128'], 'client allowlist saved');
  assert.deepEqual(rec.packages, ['acme/pkg', 'acme/internal-*'], 'package patterns saved');
  await assertText(row, /acme\/internal-\*/);
  await assertText(row, /127\.0\.0\.1\/32/);
  assert.deepEqual(rec.routes, [
    { path: '/p2/acme/*', access: 'read' },
    { path: '/p2/acme/internal-*', access: 'none' },
  ]);
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token1), 200, 'allowed beside the deny rule');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/internal-x.json`, token1), 403, 'the deny rule');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/other.json`, token1), 403, 'inside the route, outside the packages');

  // ---- regenerate: confirmation names the token; the old secret stops working.
  await row.getByRole('button', { name: 'Regenerate ci-reader' }).click();
  const confirm = page.locator('#confirm-dialog');
  await assertText(confirm.locator('#confirm-title'), /Regenerate “ci-reader”\?/);
  await confirm.getByRole('button', { name: 'Regenerate ci-reader' }).click();
  await assertText(reveal.locator('#reveal-title'), /New secret for ci-reader/);
  const token2 = await reveal.getByLabel('Token', { exact: true }).inputValue();
  assert.match(token2, TOKEN_RE);
  assert.notEqual(token2, token1);
  assert.equal(token2.slice(4, 16), token1.slice(4, 16), 'same id');
  assert.equal(await reveal.getByLabel('Proxy host').inputValue(), 'packages.example.com', 'host remembered');
  await page.keyboard.press('Escape');
  await reveal.waitFor({ state: 'hidden' });
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token1), 401, 'old secret after regenerate');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token2), 200, 'new secret after regenerate');

  // ---- regenerate with an overlap: the old secret keeps working, the row says until when,
  // and the first use of the new secret ends it.
  await row.getByRole('button', { name: 'Regenerate ci-reader' }).click();
  await confirm.getByLabel('Keep the old secret working').selectOption('24h');
  await confirm.getByRole('button', { name: 'Regenerate ci-reader' }).click();
  // The title is still the last reveal's: wait for the dialog itself to open again.
  await reveal.waitFor({ state: 'visible' }).catch(async (e) => {
    throw new Error(`no reveal after regenerating with an overlap: ${await page.locator('#confirm-error').textContent()} (${e.message})`);
  });
  await assertText(reveal.locator('#reveal-title'), /New secret for ci-reader/);
  // The title is still the last reveal's until this one opens: wait for the new token itself.
  await until('the overlap token revealed', 10000, async () => (await reveal.getByLabel('Token', { exact: true }).inputValue()) !== '');
  const token3 = await reveal.getByLabel('Token', { exact: true }).inputValue();
  assert.match(token3, TOKEN_RE);
  await page.keyboard.press('Escape');
  await reveal.waitFor({ state: 'hidden' });
  await assertText(row, /previous secret valid until/);
  const overlapped = (await apiTokens(w)).find((x) => x.name === 'ci-reader');
  const left = new Date(overlapped.previous_valid_until).getTime() - Date.now();
  assert.ok(left > 23 * 3600e3 && left <= 24 * 3600e3, `previous_valid_until ${overlapped.previous_valid_until}`);
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token2), 200, 'old secret in the overlap');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token3), 200, 'new secret');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token2), 401, 'old secret after the new one was used');

  // ---- disable / enable: one click each; refused meanwhile, the same secret works after.
  await row.getByRole('button', { name: 'Disable ci-reader' }).click();
  await assertText(status, /Disabled “ci-reader”/);
  await assertText(row.locator('th'), /disabled/);
  assert.equal((await apiTokens(w)).find((x) => x.name === 'ci-reader').disabled, true);
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token3), 401, 'disabled');
  await row.getByRole('button', { name: 'Enable ci-reader' }).click();
  await assertText(status, /Enabled “ci-reader”/);
  assert.equal((await apiTokens(w)).find((x) => x.name === 'ci-reader').disabled, false);
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token3), 200, 'enabled again');

  // ---- a duplicate name: the API's refusal shows next to the name field, in plain words.
  await page.getByRole('button', { name: 'New token' }).click();
  await form.getByLabel('Name', { exact: true }).fill('ci-reader');
  await form.getByRole('button', { name: 'Create token' }).click();
  await assertText(form.locator('#f-name-error'), /name “ci-reader” is already taken/);
  assert.equal(await form.getByLabel('Name', { exact: true }).evaluate((e) => e === document.activeElement), true, 'focus on the field at fault');
  await form.getByRole('button', { name: 'Cancel' }).click();
  await form.waitFor({ state: 'hidden' });

  // ---- revoke: confirmation names the token; the row goes, the token stops working.
  await row.getByRole('button', { name: 'Revoke ci-reader' }).click();
  await assertText(confirm.locator('#confirm-text'), /“ci-reader” stops working/);
  await confirm.getByRole('button', { name: 'Revoke ci-reader' }).click();
  await assertText(status, /Revoked “ci-reader”/);
  await row.waitFor({ state: 'detached' });
  assert.equal((await apiTokens(w)).find((x) => x.name === 'ci-reader'), undefined, 'gone from the API');
  assert.equal(await proxyStatus(`${w.proxy}/p2/acme/pkg.json`, token3), 401, 'revoked token');

  // ---- a token expiring within 7 days is marked.
  const soon = new Date(Date.now() + 3 * 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
  const made = await fetch(`${w.admin}/api/v1/tokens`, {
    method: 'POST',
    headers: { Authorization: w.adminAuth, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'short-lived', permission: 'read', expires_in: soon }),
  });
  assert.equal(made.status, 201, 'POST /api/v1/tokens');
  await page.getByRole('button', { name: 'Refresh' }).click();
  const soonRow = rows.locator('tr[data-name="short-lived"]');
  await soonRow.waitFor();
  await assertText(soonRow.locator('.tag.expiring'), /expires soon/);
  assert.equal(await soonRow.getAttribute('class'), 'expiring-soon');
  assert.equal(await rows.locator('tr[data-name="admin"] .tag.expiring').count(), 0, 'no expiry: not marked');

  // ---- a reload keeps the session (this tab), sign out forgets it.
  await page.reload();
  await rows.locator('tr[data-name="admin"]').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Manager token').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.auth')), null, 'forgotten');
  assert.equal(await rows.locator('tr').count(), 0);

  // ---- no console errors and no CSP violations in all of the above…
  assert.deepEqual(consoleErrors, [], 'console errors');
  assert.deepEqual(refusals, [401, 409], 'only the provoked API refusals');
  assert.deepEqual(violations, [], 'CSP violations');

  // …and the policy is live: an injected inline script is refused and does not run.
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true;';
    document.body.append(s);
  });
  await until('the CSP violation report', 5000, () => violations.length > 0);
  assert.equal(await page.evaluate(() => window.__inlineRan === true), false, 'inline script blocked');
  assert.match(violations[0].directive, /^script-src/);
  t.diagnostic(`screenshots in ${OUT}`);
}

/** Ids of form controls without a label (none expected). */
function unlabelled(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
      .map((e) => e.id || e.outerHTML),
  );
}

async function assertText(locator, re) {
  try {
    await until(`text ${re}`, 10000, async () => re.test(await locator.innerText()));
  } catch (e) {
    const got = await locator.innerText().catch((x) => `<${x.message}>`);
    throw new Error(`${e.message}; got ${JSON.stringify(got)}`);
  }
}
