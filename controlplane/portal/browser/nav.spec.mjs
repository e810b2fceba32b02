// Browser test: every demo user's navigation. For each demo user the left
// navigation must show exactly the entries the expectation table below
// gives — written from SPEC §2's permission matrices
// (../shared/acceptance/role-matrix.csv), not read from the product —
// every entry must open without an error page, script error or sideways
// scrolling at 1280 and 768 px, and pages the user must not reach (and
// unknown IDs) must show the portal's error page with a message, never a
// blank page or a stack trace. Run by TestBrowser's "nav" subtest with
// BASE_URL, CHROMIUM, SHOTS and PASSWORD set.
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, loginWith, overflows, step } from './lib.mjs';

const base = process.env.BASE_URL;
const shots = process.env.SHOTS;
const browser = await launch();
const login = loginWith(browser, base, process.env.PASSWORD);

const admin = ['users', 'roles', 'audit', 'company'];
// Operator roles: Service Case Management or Internal Service Cases ≥ read
// → cases; Maintenance Engineers also get "My Internal Service Cases"
// (seed 000); Digital Shopfloor ≥ read → shop floor, and the edge devices
// on their assets read-only (issue 5). Tenant Admins hold no operational
// feature. Providers: Service Case Management ≥ read → cases; Edge Devices,
// Customer Management, Machine Models ≥ read → their pages.
const expected = {
  'admin@nordwerk.example': admin,
  'mo@nordwerk.example': ['cases', 'shopfloor', 'devices'],
  'wm@nordwerk.example': ['cases', 'shopfloor', 'devices'],
  'oisc@nordwerk.example': ['cases', 'shopfloor', 'devices'],
  'me@nordwerk.example': ['cases', 'mine', 'shopfloor', 'devices'],
  'admin@sudhaus.example': admin,
  'mo@sudhaus.example': ['cases', 'shopfloor', 'devices'],
  'wm@sudhaus.example': ['cases', 'shopfloor', 'devices'],
  'admin@acme.example': admin,
  'st@acme.example': ['cases', 'devices', 'models'],
  '1ls@acme.example': ['cases', 'devices', 'models'],
  'mdm@acme.example': ['devices', 'models'],
  'cdm@acme.example': ['devices', 'customers', 'models'],
  'sm@acme.example': ['cases', 'devices', 'customers', 'models'],
  'admin@appforge.example': admin,
};
const pageOf = {
  cases: '/cases', mine: '/cases?kind=internal&mine=1', shopfloor: '/shopfloor', devices: '/devices',
  customers: '/customers', models: '/models', users: '/users', roles: '/roles', audit: '/audit', company: '/company',
};
// URLs each kind of user must not reach: every navigation page not in the
// user's table entry, plus unknown IDs.
const unknown = ['/cases/00000000-0000-0000-0000-000000000000', '/shopfloor/assets/00000000-0000-0000-0000-000000000000', '/models/00000000-0000-0000-0000-000000000000'];

async function expectErrorPage(page, url, user) {
  const resp = await page.goto(base + url);
  const status = resp.status();
  assert.ok(status === 403 || status === 404, `${user} ${url}: HTTP ${status}, want 403 or 404`);
  const msg = (await page.locator('[data-testid=error]').textContent({ timeout: 5000 })).trim();
  assert.ok(msg.length > 10, `${user} ${url}: error page without a helpful message: "${msg}"`);
  const body = await page.locator('body').innerText();
  assert.ok(!/goroutine \d+|panic:|\.go:\d+/.test(body), `${user} ${url}: stack trace on the page`);
}

let shot = new Set();
for (const [user, want] of Object.entries(expected)) {
  step(`navigation of ${user}`);
  const s = await login(user);
  const got = await s.page.$$eval('[data-testid^=nav-]', (els) => els.map((e) => e.dataset.testid.slice(4)));
  assert.deepEqual([...got].sort(), [...want].sort(), `${user}: navigation entries`);
  for (const entry of want) {
    const resp = await s.page.goto(base + pageOf[entry]);
    assert.equal(resp.status(), 200, `${user} → ${entry}: HTTP ${resp.status()}`);
    assert.equal(await s.page.locator('[data-testid=error]').count(), 0, `${user} → ${entry}: error page`);
    assert.ok((await s.page.locator('main').innerText()).trim().length > 0, `${user} → ${entry}: blank page`);
    assert.ok(!(await overflows(s.page)), `${user} → ${entry}: scrolls sideways at 1280 px`);
  }
  await s.page.setViewportSize({ width: 768, height: 1024 });
  for (const entry of want) {
    await s.page.goto(base + pageOf[entry]);
    assert.ok(!(await overflows(s.page)), `${user} → ${entry}: scrolls sideways at 768 px`);
  }
  await s.page.setViewportSize({ width: 1280, height: 800 });
  const denied = Object.keys(pageOf).filter((k) => !want.includes(k) && k !== 'mine');
  for (const entry of denied) await expectErrorPage(s.page, pageOf[entry], user);
  for (const url of unknown) await expectErrorPage(s.page, url, user);
  const kind = user.split('@')[1];
  if (!shot.has(kind)) {
    shot.add(kind);
    await s.page.goto(base + pageOf[want[0]]);
    await s.page.screenshot({ path: path.join(shots, `nav-${kind.split('.')[0]}-${user.split('@')[0]}.png`), fullPage: true });
  }
  assert.deepEqual(s.errors, [], `${user}: script errors ${s.errors}`);
  await s.ctx.close();
}
await browser.close();
console.log('nav spec: ok');
