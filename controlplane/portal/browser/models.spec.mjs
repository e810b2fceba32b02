// Browser test of the portal's machine models, customers and Secure
// Service Connect pages: Debian's chromium driven by playwright-core,
// launched by lib.mjs like the other specs (loopback only). Run by TestBrowser's
// "models" subtest (portal_test.go) with BASE_URL, CHROMIUM, SHOTS,
// PASSWORD and HUB_ENDPOINT (the WireGuard hub's public endpoint) set.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { launch, step } from './lib.mjs';

const base = process.env.BASE_URL;
const shots = process.env.SHOTS;
const password = process.env.PASSWORD;
const hubEndpoint = process.env.HUB_ENDPOINT;

const browser = await launch();
const wide = { width: 1280, height: 800 };
const tablet = { width: 768, height: 1024 };

async function login(email, viewport = wide) {
  const ctx = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base + '/login');
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login')), page.click('button[type=submit]')]);
  await page.waitForSelector('[data-testid=nav]');
  return { ctx, page, errors };
}

// noOverflow asserts that neither the page nor its main content scrolls
// sideways at the current viewport.
async function noOverflow(page, what) {
  const o = await page.evaluate(() => {
    const m = document.querySelector('main');
    return { doc: document.documentElement.scrollWidth - window.innerWidth, main: m.scrollWidth - m.clientWidth };
  });
  assert.ok(o.doc <= 1 && o.main <= 1, `${what} overflows horizontally at ${page.viewportSize().width} px: ${JSON.stringify(o)}`);
}

// atBothWidths checks the current page at 1280×800 and at 768 px.
async function atBothWidths(page, what) {
  await page.setViewportSize(wide);
  await noOverflow(page, what);
  await page.setViewportSize(tablet);
  await noOverflow(page, what);
  await page.screenshot({ path: path.join(shots, `${what}-768.png`), fullPage: true });
  await page.setViewportSize(wide);
}

// fieldError is the validation message shown next to the input named name.
const fieldError = (page, name) => page.locator(`.pf:has([name="${name}"]) [data-testid=field-error], div:has(> label > [name="${name}"]) > [data-testid=field-error]`);

try {
  step('master data manager: create a model, first with an invalid data point');
  const mdm = await login('mdm@acme.example');
  await mdm.page.click('[data-testid=nav-models]');
  await mdm.page.waitForURL(/\/models$/);
  assert.ok((await mdm.page.locator('[data-testid=model]').allInnerTexts()).join(' ').includes('CNC-5X'));
  await mdm.page.click('[data-testid=new-model]');
  await mdm.page.fill('input[name=name]', 'Press P-200');
  await mdm.page.check('[data-testid=conn-vnc]');
  await mdm.page.check('[data-testid=conn-ssc]');
  await mdm.page.fill('textarea[name="remote_access.vnc_targets"]', '10.1.0.20:5900');
  await mdm.page.fill('textarea[name="remote_access.machine_subnets"]', '10.1.0.0/24');
  await mdm.page.fill('textarea[name="remote_access.ssc_ports"]', 'tcp/102\nudp/161');
  await mdm.page.fill('input[name="opcua.endpoint_url"]', 'opc.tcp://10.1.0.30:4840');
  const dp = (k) => `[name="opcua.data_points[0].${k}"]`;
  await mdm.page.fill(dp('node_id'), 'Press Force');
  await mdm.page.fill(dp('name'), 'Force');
  await mdm.page.fill(dp('unit'), 'kN');
  await mdm.page.fill(dp('sampling_interval_ms'), '250');
  await mdm.page.selectOption(dp('deadband_type'), 'absolute');
  await mdm.page.fill(dp('deadband_value'), '0.5');
  await mdm.page.fill(dp('warn_above'), '800');
  await mdm.page.fill(dp('alarm_above'), '950');
  await Promise.all([mdm.page.waitForLoadState('load'), mdm.page.click('[data-testid=save-model]')]);
  await mdm.page.waitForSelector('[data-testid=form-error]');
  const err = fieldError(mdm.page, 'opcua.data_points[0].node_id');
  assert.match(await err.innerText(), /"Press Force" is not an OPC-UA node ID/);
  assert.equal(await fieldError(mdm.page, 'opcua.data_points[0].name').count(), 0, 'no error next to the valid name');
  assert.equal(await mdm.page.inputValue(dp('node_id')), 'Press Force', 'the invalid input is kept');
  assert.equal(await mdm.page.inputValue(dp('warn_above')), '800');
  assert.equal(await mdm.page.inputValue('input[name=name]'), 'Press P-200');
  assert.equal(await mdm.page.isChecked('[data-testid=conn-ssc]'), true);
  await err.scrollIntoViewIfNeeded();
  await mdm.page.screenshot({ path: path.join(shots, 'model-form-error.png'), fullPage: true });
  await atBothWidths(mdm.page, 'model-form-error');

  step('... then valid');
  await mdm.page.fill(dp('node_id'), 'ns=2;s=Press.Force');
  await Promise.all([mdm.page.waitForURL(/\/models\/[0-9a-f-]{36}\?saved=1$/), mdm.page.click('[data-testid=save-model]')]);
  await mdm.page.waitForSelector('[data-testid=saved]');
  assert.equal(await mdm.page.inputValue(dp('node_id')), 'ns=2;s=Press.Force');
  assert.equal(await mdm.page.inputValue('textarea[name="remote_access.ssc_ports"]'), 'tcp/102\nudp/161');
  assert.equal(await mdm.page.locator('[data-testid=field-error]').count(), 0);
  await mdm.page.click('[data-testid=nav-models]');
  assert.ok((await mdm.page.locator('[data-testid=model]').allInnerTexts()).join(' ').includes('Press P-200'));
  await mdm.page.screenshot({ path: path.join(shots, 'models.png'), fullPage: true });
  assert.deepEqual(mdm.errors, []);

  step('read-only role: the form is disabled with a reason');
  const first = await login('1ls@acme.example');
  await first.page.click('[data-testid=nav-models]');
  assert.equal(await first.page.locator('[data-testid=new-model]').count(), 0);
  await first.page.click('a:text("CNC-5X")');
  await first.page.waitForSelector('[data-testid=readonly-reason]');
  assert.equal(await first.page.isDisabled('input[name=name]'), true);
  assert.equal(await first.page.isDisabled('[data-testid=save-model]'), true);
  await first.page.screenshot({ path: path.join(shots, 'model-readonly.png'), fullPage: true });

  step('roles without Machine Models: no link, an error page on the URL');
  for (const email of ['admin@acme.example', 'me@nordwerk.example']) {
    const u = await login(email);
    assert.equal(await u.page.locator('[data-testid=nav-models]').count(), 0, `${email} must not see machine models`);
    const resp = await u.page.goto(base + '/models');
    assert.equal(resp.status(), 403);
    assert.equal(await u.page.locator('h1').innerText(), 'Not allowed');
    assert.match(await u.page.locator('[data-testid=error]').innerText(), /machine models|Machine Models/);
    assert.doesNotMatch(await u.page.content(), /goroutine|panic|runtime\//);
    if (email.startsWith('admin')) await u.page.screenshot({ path: path.join(shots, 'models-denied.png'), fullPage: true });
    await u.ctx.close();
  }

  step('provider: customers and their machines');
  const cdm = await login('cdm@acme.example');
  await cdm.page.click('[data-testid=nav-customers]');
  const customers = (await cdm.page.locator('[data-testid=customer]').allInnerTexts()).join('\n');
  assert.match(customers, /Nordwerk Plant/);
  assert.match(customers, /Sudhaus Foods/);
  await cdm.page.screenshot({ path: path.join(shots, 'customers.png'), fullPage: true });
  await atBothWidths(cdm.page, 'customers');
  await cdm.page.click('a:text("Nordwerk Plant")');
  const machines = (await cdm.page.locator('[data-testid=machine]').allInnerTexts()).join('\n');
  assert.match(machines, /CNC-5X #1041/);
  assert.match(machines, /CNC-5X #1042/);
  assert.match(machines, /linked/);
  await cdm.page.screenshot({ path: path.join(shots, 'customer-machines.png'), fullPage: true });
  await atBothWidths(cdm.page, 'customer-machines');
  assert.equal(await cdm.page.locator('[data-testid=machine-case]').count(), 0, 'CDM cannot read cases, so no case links');
  const sm = await login('sm@acme.example');
  await sm.page.click('[data-testid=nav-customers]');
  await sm.page.click('a:text("Nordwerk Plant")');
  await Promise.all([sm.page.waitForURL(/\/cases\/[0-9a-f-]{36}$/), sm.page.click('[data-testid=machine-case] >> text=Spindle vibration above limit')]);
  await sm.page.waitForSelector('[data-testid=case-detail]');

  step('engineer: Secure Service Connect config download and QR code');
  const me = await login('me@nordwerk.example');
  await me.page.click('[data-testid=nav-cases]');
  await me.page.click('[data-testid=new-case]');
  await me.page.check('input[name=kind][value=internal]');
  await me.page.selectOption('select[name=asset_id]', { label: 'CNC-5X #1041' });
  await me.page.fill('input[name=title]', 'Reach the PLC with TIA Portal');
  await Promise.all([me.page.waitForURL(/\/cases\/[0-9a-f-]{36}$/), me.page.click('button.primary')]);
  const caseID = me.page.url().split('/').pop();
  await Promise.all([me.page.waitForURL(/#remote$/), me.page.click('[data-testid=activate]')]);
  await me.page.waitForSelector('[data-testid=ssc-generate]');
  await me.page.screenshot({ path: path.join(shots, 'case-ssc-button.png'), fullPage: true });
  await Promise.all([me.page.waitForURL(/\/ssc$/), me.page.click('[data-testid=ssc-generate]')]);
  await me.page.waitForSelector('[data-testid=ssc]');
  assert.match(await me.page.locator('[data-testid=ssc-once]').innerText(), /shown only once/);
  const qrOK = await me.page.locator('[data-testid=ssc-qr]').evaluate((img) => img.complete && img.naturalWidth > 100 && img.naturalWidth === img.naturalHeight);
  assert.ok(qrOK, 'the QR code image is shown');
  const shown = await me.page.inputValue('[data-testid=ssc-config]');
  const [download] = await Promise.all([me.page.waitForEvent('download'), me.page.click('[data-testid=ssc-download]')]);
  assert.equal(download.suggestedFilename(), `gantry-${caseID}.conf`);
  const file = await fs.readFile(await download.path(), 'utf8');
  assert.equal(file, shown, 'the file is the config on the page');
  const firstLine = file.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#'));
  assert.equal(firstLine, '[Interface]', 'the config starts with [Interface] (after comments)');
  assert.ok(file.includes(`\nEndpoint = ${hubEndpoint}\n`), `Endpoint = ${hubEndpoint} in:\n${file}`);
  // Only the CNC-5X template's /24 machine subnet (or the virtual subnet
  // the hub maps it to) is routed.
  assert.match(file, /\nAllowedIPs = \d+\.\d+\.\d+\.0\/24\n/);
  assert.match(file, /\nPrivateKey = [A-Za-z0-9+/]{43}=\n/);
  await me.page.screenshot({ path: path.join(shots, 'ssc-config.png'), fullPage: true });
  await atBothWidths(me.page, 'ssc-config');
  assert.deepEqual(me.errors, []);

  step('a user the cases service refuses sees no SSC button');
  const oisc = await login('oisc@nordwerk.example');
  await oisc.page.goto(base + '/cases/' + caseID);
  await oisc.page.waitForSelector('[data-testid=connect-ssc][disabled]');
  assert.equal(await oisc.page.locator('[data-testid=ssc-generate]').count(), 0);
} finally {
  await browser.close();
}
console.log('models browser test passed');
