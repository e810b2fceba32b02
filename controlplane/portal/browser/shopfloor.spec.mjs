// Browser test of the shop floor pages and the asset dashboard. Run by
// TestBrowser/shopfloor (shopfloor_test.go) with BASE_URL, CHROMIUM,
// SHOTS and PASSWORD set, and INJECTED: the spindle speed the test's agent
// published through MQTT before the start. The test asks the Go side for
// a newer value by printing "publish:<value>" and waits for the
// dashboard's polling to show it.
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, loginWith, overflows, step } from './lib.mjs';

const base = process.env.BASE_URL;
const shots = process.env.SHOTS;
const injected = process.env.INJECTED;

const browser = await launch();
const login = loginWith(browser, base, process.env.PASSWORD);
const shot = (page, name) => page.screenshot({ path: path.join(shots, name), fullPage: true });

try {
  step('roles without Digital Shopfloor see no shop floor');
  for (const email of ['admin@nordwerk.example', 'st@acme.example']) {
    const s = await login(email);
    assert.equal(await s.page.locator('[data-testid=nav-shopfloor]').count(), 0, email + ' sees the shop floor navigation');
    const resp = await s.page.goto(base + '/shopfloor');
    assert.equal(resp.status(), 403, email + ' /shopfloor');
    assert.match(await s.page.locator('h1').innerText(), /Not allowed/);
    await s.ctx.close();
  }

  step('reader: disabled controls with a reason');
  const me = await login('me@nordwerk.example');
  await me.page.click('[data-testid=nav-shopfloor]');
  await me.page.waitForURL(/\/shopfloor$/);
  const disabledEdit = me.page.locator('[data-testid=edit-asset-disabled]').first();
  assert.equal(await disabledEdit.isDisabled(), true);
  assert.match(await disabledEdit.getAttribute('title'), /Digital Shopfloor = manage/);
  assert.equal(await me.page.locator('[data-testid=create-facility]').isDisabled(), true);
  assert.ok(await me.page.locator('[data-testid=readonly-reason]').first().isVisible(), 'the reason is shown');
  assert.equal(await me.page.locator('[data-testid=accept]').isDisabled(), true, 'reader may not accept proposals');
  await shot(me.page, 'shopfloor-reader.png');

  step('workshop manager: facility with a validation error first');
  const wm = await login('wm@nordwerk.example');
  await wm.page.click('[data-testid=nav-shopfloor]');
  await wm.page.waitForURL(/\/shopfloor$/);
  await wm.page.fill('[data-testid=facility-name]', '   ');
  await Promise.all([wm.page.waitForLoadState('load'), wm.page.click('[data-testid=create-facility]')]);
  // The message sits right after the field's label, inside the facility form.
  const facErr = wm.page.locator('[data-testid=new-facility] label:has([data-testid=facility-name]) + [data-testid=facility-name-error]');
  assert.match(await facErr.innerText(), /a name is required/);
  await shot(wm.page, 'shopfloor-facility-error.png');
  await wm.page.fill('[data-testid=facility-name]', 'Hall 3');
  await Promise.all([wm.page.waitForURL(/#facility-/), wm.page.click('[data-testid=create-facility]')]);
  await wm.page.locator('[data-testid=facility][data-name="Hall 3"]').waitFor();

  step('asset with a validation error first');
  await wm.page.selectOption('[data-testid=new-asset] [data-testid=asset-facility]', { label: 'Hall 3' });
  await wm.page.fill('[data-testid=asset-serial]', 'P9-0001');
  await Promise.all([wm.page.waitForLoadState('load'), wm.page.click('[data-testid=create-asset]')]);
  const assetErr = wm.page.locator('[data-testid=new-asset] label:has([data-testid=asset-name]) + [data-testid=asset-name-error]');
  assert.match(await assetErr.innerText(), /a name is required/);
  assert.equal(await wm.page.inputValue('[data-testid=asset-serial]'), 'P9-0001', 'the entered serial number stays');
  assert.equal(await wm.page.locator('[data-testid=new-asset] [data-testid=asset-facility] option:checked').innerText(), 'Hall 3');
  await wm.page.fill('[data-testid=asset-name]', 'Press P-9');
  await Promise.all([wm.page.waitForURL(/#asset-/), wm.page.click('[data-testid=create-asset]')]);
  await wm.page.locator('[data-testid=facility][data-name="Hall 3"] [data-testid=asset][data-name="Press P-9"]').waitFor();

  step('accept a proposal into Hall 3');
  const proposal = wm.page.locator('[data-testid=proposal][data-name="CNC-5X #1043"]');
  await proposal.locator('[data-testid=accept-facility]').selectOption({ label: 'Hall 3' });
  await shot(wm.page, 'shopfloor-manager.png');
  await Promise.all([wm.page.waitForURL(/#asset-/), proposal.locator('[data-testid=accept]').click()]);
  await wm.page.locator('[data-testid=facility][data-name="Hall 3"] [data-testid=asset][data-name="CNC-5X #1043"]').waitFor();
  assert.equal(await wm.page.locator('[data-testid=proposal]').count(), 0, 'the accepted proposal is still offered');

  step('rename the asset: error next to the field, then saved');
  await wm.page.locator('[data-testid=asset][data-name="Press P-9"] [data-testid=edit-asset]').click();
  await wm.page.waitForURL(/\/edit$/);
  await wm.page.fill('[data-testid=asset-name]', '');
  await Promise.all([wm.page.waitForLoadState('load'), wm.page.click('[data-testid=save-asset]')]);
  assert.match(await wm.page.locator('label:has([data-testid=asset-name]) + [data-testid=asset-name-error]').innerText(), /a name is required/);
  await wm.page.fill('[data-testid=asset-name]', 'Press P-9 (hydraulic)');
  await Promise.all([wm.page.waitForURL(/\/shopfloor#asset-/), wm.page.click('[data-testid=save-asset]')]);
  await wm.page.locator('[data-testid=asset][data-name="Press P-9 (hydraulic)"]').waitFor();

  step('asset dashboard: the value the agent published, a trend, counters and events');
  await me.page.goto(base + '/shopfloor');
  await Promise.all([me.page.waitForURL(/\/shopfloor\/assets\/[0-9a-f-]{36}$/),
    me.page.locator('[data-testid=asset][data-name="CNC-5X #1041"] [data-testid=dashboard-link]').click()]);
  const spindle = me.page.locator('[data-testid=point][data-point="Spindle speed"]');
  assert.equal(await spindle.locator('[data-testid=point-value]').innerText(), injected);
  assert.equal(await spindle.locator('[data-testid=point-status]').innerText(), 'Good');
  assert.match(await spindle.locator('[data-testid=point-at]').innerText(), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  const trend = spindle.locator('svg[data-testid=trend] polyline');
  const vertices = (await trend.getAttribute('points')).trim().split(/\s+/);
  assert.ok(vertices.length >= 2, 'trend vertices: ' + vertices.length);
  assert.equal(String(vertices.length), await spindle.locator('svg[data-testid=trend]').getAttribute('data-points'));
  const box = await spindle.locator('svg[data-testid=trend]').boundingBox();
  assert.ok(box.width > 100 && box.height > 20, 'trend chart is visible: ' + JSON.stringify(box));
  assert.match(await me.page.locator('[data-testid=running-hours]').first().innerText(), /Running: 1234\.50 h/);
  assert.match(await me.page.locator('[data-testid=energy]').first().innerText(), /Energy: 42\.125 kWh/);
  assert.match(await me.page.locator('[data-testid=event][data-level=warning]').first().innerText(), /Temperature/);
  assert.equal(await me.page.locator('[data-testid=online]').first().innerText(), 'online');
  assert.equal(await overflows(me.page), false, 'dashboard scrolls sideways at 1280 px');
  await shot(me.page, 'asset-dashboard.png');

  step('the dashboard refreshes itself (htmx polling) with a newly published value');
  const next = String(Number(injected) + 777);
  console.log('publish:' + next);
  await spindle.locator('[data-testid=point-value]', { hasText: next }).waitFor({ timeout: 20000 });
  assert.deepEqual(me.errors, [], 'page errors: ' + me.errors);

  step('devices page links to the asset dashboard');
  await me.page.click('[data-testid=nav-devices]');
  await me.page.waitForURL(/\/devices$/);
  await Promise.all([me.page.waitForURL(/\/shopfloor\/assets\//), me.page.locator('[data-testid=device-dashboard]').first().click()]);
  await me.page.locator('[data-testid=dashboard-title]', { hasText: 'CNC-5X #1041' }).waitFor();

  step('tablet width');
  const tab = await login('wm@nordwerk.example', { width: 768, height: 1024 });
  await tab.page.goto(base + '/shopfloor');
  assert.equal(await overflows(tab.page), false, 'shop floor scrolls sideways at 768 px');
  await shot(tab.page, 'shopfloor-tablet.png');
  await tab.page.goto(me.page.url());
  await tab.page.locator('svg[data-testid=trend]').first().waitFor();
  assert.equal(await overflows(tab.page), false, 'dashboard scrolls sideways at 768 px');
  await shot(tab.page, 'asset-dashboard-tablet.png');
  await wm.page.goto(base + '/shopfloor');
  assert.equal(await overflows(wm.page), false, 'shop floor scrolls sideways at 1280 px');

  for (const s of [me, wm, tab]) assert.deepEqual(s.errors, [], 'page errors: ' + s.errors);
  console.log('shop floor browser test passed');
} finally {
  await browser.close();
}
