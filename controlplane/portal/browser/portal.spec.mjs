// Browser test of the Gantry portal: Debian's chromium driven by
// playwright-core, locked to loopback. Run by TestBrowser (portal_test.go)
// with BASE_URL, CHROMIUM, SHOTS, PASSWORD and RFB_PIXELS (the demo HMI's
// test pattern: size and sample pixels from testbed/rfbserver) set.
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, loginWith, step } from './lib.mjs';

const base = process.env.BASE_URL;
const shots = process.env.SHOTS;
const password = process.env.PASSWORD;
const rfb = JSON.parse(process.env.RFB_PIXELS || 'null');

const browser = await launch();
const login = loginWith(browser, base, password);

try {
  step('maintenance engineer: navigation, list, label and border');
  const me = await login('me@nordwerk.example');
  await me.page.waitForSelector('[data-testid=nav-mine]');
  assert.equal(await me.page.locator('[data-testid=nav-users]').count(), 0, 'ME must not see user management');
  const internal = me.page.locator('li.case[data-kind=internal]').first();
  await internal.waitFor();
  assert.equal(await internal.locator('[data-testid=internal-label]').innerText(), 'Internal');
  const border = await internal.evaluate((el) => getComputedStyle(el).borderTopColor);
  const sharedBorder = await me.page.locator('li.case[data-kind=shared]').first().evaluate((el) => getComputedStyle(el).borderTopColor);
  assert.notEqual(border, sharedBorder, 'internal cases have a coloured border');
  await me.page.screenshot({ path: path.join(shots, 'cases-me.png'), fullPage: true });

  step('filter buttons');
  await me.page.click('[data-testid=filter-internal]');
  await me.page.waitForURL(/kind=internal/);
  const kinds = await me.page.locator('li.case').evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(kinds.length > 0 && kinds.every((k) => k === 'internal'), 'INTERNAL shows only internal cases: ' + kinds);
  await me.page.click('[data-testid=filter-shared]');
  await me.page.waitForURL(/kind=shared/);
  const sk = await me.page.locator('li.case').evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(sk.length > 0 && sk.every((k) => k === 'shared'), 'SHARED shows only shared cases');

  step('My Internal Service Cases');
  await me.page.click('[data-testid=nav-mine]');
  await me.page.waitForURL(/mine=1/);
  assert.ok((await me.page.locator('li.case').allInnerTexts()).join(' ').includes('Coolant pump noisy'));

  step('create an internal case and edit state and assignee');
  await me.page.click('[data-testid=nav-cases]');
  await me.page.click('[data-testid=new-case]');
  await me.page.check('input[name=kind][value=internal]');
  await me.page.fill('input[name=title]', 'Hydraulic leak at press');
  await Promise.all([me.page.waitForURL(/\/cases\/[0-9a-f-]{36}$/), me.page.click('button.primary')]);
  await me.page.waitForSelector('[data-testid=case-detail].internal');
  await me.page.selectOption('[data-testid=state-select]', 'in_progress');
  await me.page.selectOption('[data-testid=assignee-select]', { label: 'Maintenance Engineer (Nordwerk Plant)' });
  await Promise.all([me.page.waitForLoadState('load'), me.page.click('[data-testid=edit-form] button')]);
  assert.equal(await me.page.locator('[data-testid=state]').innerText(), 'In progress');
  const caseURL = me.page.url();

  step('remote access: activate and deactivate');
  await me.page.goto(base + '/cases');
  await me.page.click('li.case >> text=Spindle vibration above limit');
  await Promise.all([me.page.waitForURL(/#remote$/), me.page.click('[data-testid=activate]')]);
  assert.match(await me.page.locator('[data-testid=remote-status]').innerText(), /Active — \d+ minutes left/);
  await me.page.screenshot({ path: path.join(shots, 'case-detail-remote-active.png'), fullPage: true });
  await Promise.all([me.page.waitForURL(/#remote$/), me.page.click('[data-testid=deactivate]')]);
  assert.equal(await me.page.locator('[data-testid=remote-status]').innerText(), 'Not active.');
  await me.page.goto(caseURL);
  await me.page.screenshot({ path: path.join(shots, 'case-detail-me.png'), fullPage: true });

  step('remote access: Connect opens noVNC through the hub and the agent');
  const cspViolations = [];
  me.page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text()); });
  await me.page.click('[data-testid=nav-cases]');
  await me.page.click('[data-testid=new-case]');
  await me.page.check('input[name=kind][value=internal]');
  await me.page.selectOption('select[name=asset_id]', { label: 'CNC-5X #1041' });
  await me.page.fill('input[name=title]', 'HMI check over VNC');
  await Promise.all([me.page.waitForURL(/\/cases\/[0-9a-f-]{36}$/), me.page.click('button.primary')]);
  const vncCaseURL = me.page.url();
  await Promise.all([me.page.waitForURL(/#remote$/), me.page.click('[data-testid=activate]')]);
  const cmds = await me.page.locator('[data-testid=datalink-command]').allInnerTexts();
  assert.ok(cmds.some((c) => /^gantryctl tunnel [0-9a-f-]{36} --target 192\.168\.10\.30:502 --listen 127\.0\.0\.1:10502$/.test(c)), 'data-link commands: ' + cmds);
  await me.page.screenshot({ path: path.join(shots, 'case-remote-connect.png'), fullPage: true });
  await Promise.all([me.page.waitForURL(/\/vnc$/), me.page.click('[data-testid=connect-vnc]')]);
  const viewer = me.page.locator('[data-testid=vnc]');
  await me.page.waitForSelector('[data-testid=vnc][data-state=connected]', { timeout: 30000 });
  await me.page.locator('[data-testid=vnc-desktop]', { hasText: 'gantry test pattern' }).waitFor({ timeout: 10000 });
  // The canvas shows rfbserver's pattern: compare sample pixels.
  const samePixels = (spec) => {
    const c = document.querySelector('[data-testid=vnc-screen] canvas');
    if (!c || c.width !== spec.width || c.height !== spec.height) return false;
    const g = c.getContext('2d');
    return spec.pixels.every((p) => {
      const d = g.getImageData(p.X, p.Y, 1, 1).data;
      return Math.abs(d[0] - p.R) <= 2 && Math.abs(d[1] - p.G) <= 2 && Math.abs(d[2] - p.B) <= 2;
    });
  };
  await me.page.waitForFunction(samePixels, rfb, { timeout: 15000 });
  // Scaling: the canvas fills the viewer, and shows 1:1 when turned off.
  const canvasWidth = () => me.page.locator('[data-testid=vnc-screen] canvas').evaluate((c) => Math.round(c.getBoundingClientRect().width));
  assert.ok((await canvasWidth()) > rfb.width, 'scaled canvas is not larger than the framebuffer');
  await me.page.screenshot({ path: path.join(shots, 'vnc-connected.png'), fullPage: true });
  await me.page.uncheck('[data-testid=vnc-scale]');
  await me.page.waitForFunction((w) => Math.round(document.querySelector('[data-testid=vnc-screen] canvas').getBoundingClientRect().width) === w, rfb.width);
  await me.page.check('[data-testid=vnc-scale]');
  // Clipboard to the machine (rfbserver accepts ClientCutText; the session stays up).
  await me.page.fill('[data-testid=vnc-clipboard]', 'G-code snippet');
  await me.page.click('[data-testid=vnc-clipboard-send]');
  // Reconnect fetches a fresh single-use token.
  await me.page.click('[data-testid=vnc-reconnect]');
  await me.page.waitForSelector('[data-testid=vnc][data-connects="2"][data-state=connected]', { timeout: 30000 });
  await me.page.waitForFunction(samePixels, rfb, { timeout: 15000 });
  assert.equal(await viewer.getAttribute('data-desktop'), 'gantry test pattern');

  step('deactivating in another page ends the session with the reason');
  const other = await me.ctx.newPage();
  await other.goto(vncCaseURL);
  const t0 = Date.now();
  await Promise.all([other.waitForURL(/#remote$/), other.click('[data-testid=deactivate]')]);
  const endedMsg = me.page.locator('[data-testid=vnc-ended]');
  await endedMsg.waitFor({ state: 'visible', timeout: 5000 });
  const ended = await endedMsg.innerText();
  assert.match(ended, /^The session ended: .*(grant ended|not active)/, 'end message: ' + ended);
  console.log(`session ended ${Date.now() - t0} ms after the deactivate click: ${ended}`);
  assert.equal(await viewer.getAttribute('data-state'), 'ended');
  await me.page.screenshot({ path: path.join(shots, 'vnc-ended.png'), fullPage: true });
  await me.page.click('[data-testid=vnc-reconnect]');
  await me.page.locator('[data-testid=vnc-ended]', { hasText: 'A new session was refused: remote access is not active on this case' }).waitFor({ timeout: 5000 });
  assert.deepEqual(cspViolations, [], 'CSP violations');
  await other.close();
  await me.page.goto(caseURL);

  step('live chat in a second browser context');
  const mo = await login('mo@nordwerk.example');
  await mo.page.goto(caseURL);
  await mo.page.waitForSelector('[data-testid=chat]', { state: 'attached' });
  await mo.page.waitForTimeout(300); // let the event stream connect
  await me.page.fill('[data-testid=chat-input]', 'Seal replaced, testing now');
  await me.page.click('[data-testid=chat-send]');
  await mo.page.locator('[data-testid=chat] li', { hasText: 'Seal replaced, testing now' }).waitFor({ timeout: 10000 });

  step('provider never sees internal cases');
  const st = await login('st@acme.example');
  await st.page.waitForSelector('[data-testid=case-list]');
  assert.equal(await st.page.locator('[data-testid=nav-mine]').count(), 0);
  assert.equal(await st.page.locator('li.case[data-kind=internal]').count(), 0, 'provider sees an internal case');
  assert.equal(await st.page.locator('[data-testid=new-case]').count(), 0);
  await st.page.goto(caseURL);
  assert.ok((await st.page.locator('h1').innerText()).includes('Not found'));
  await st.page.screenshot({ path: path.join(shots, 'provider-internal-denied.png') });

  step('tablet width');
  const tab = await login('wm@nordwerk.example', { width: 768, height: 1024 });
  await tab.page.waitForSelector('[data-testid=case-list]');
  const overflow = await tab.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  assert.equal(overflow, false, 'no horizontal scrolling at 768 px');
  await tab.page.screenshot({ path: path.join(shots, 'cases-tablet.png'), fullPage: true });

  step('admin lands on users; login page and errors');
  const admin = await login('admin@nordwerk.example');
  await admin.page.waitForSelector('[data-testid=users]');
  await admin.page.screenshot({ path: path.join(shots, 'users-admin.png'), fullPage: true });
  const anon = await browser.newContext();
  const lp = await anon.newPage();
  await lp.goto(base + '/login');
  await lp.fill('input[name=email]', 'me@nordwerk.example');
  await lp.fill('input[name=password]', 'wrong-password');
  await lp.click('button[type=submit]');
  await lp.waitForSelector('[data-testid=login-error]');
  await lp.screenshot({ path: path.join(shots, 'login-error.png') });

  step('tenant admin: invite a user; the invitee accepts and logs in');
  assert.equal(await admin.page.locator('[data-testid=nav-audit]').count(), 1);
  await admin.page.fill('[data-testid=invite-email]', 'invited@nordwerk.example');
  await admin.page.selectOption('[data-testid=invite-role]', 'machine_operator');
  await Promise.all([admin.page.waitForLoadState('load'), admin.page.click('[data-testid=invite-submit]')]);
  const link = await admin.page.locator('[data-testid=invite-link]').getAttribute('href');
  assert.match(link, /\/invite\?token=/);
  await admin.page.screenshot({ path: path.join(shots, 'users-invited.png'), fullPage: true });
  const invitee = await browser.newContext();
  const ip = await invitee.newPage();
  await ip.goto(link.startsWith('http') ? link : base + link);
  await ip.fill('input[name=display_name]', 'Invited Operator');
  await ip.fill('input[name=password]', 'invited-password-1');
  await ip.click('button[type=submit]');
  await ip.waitForSelector('[data-testid=invite-done]');
  const invited = await login('invited@nordwerk.example', undefined, 'invited-password-1');
  assert.equal(await invited.page.locator('[data-testid=who]').innerText(), 'Invited Operator');
  assert.equal(await invited.page.locator('[data-testid=nav-users]').count(), 0, 'invited operator must not see user management');

  step('tenant admin: assign and revoke a role');
  await admin.page.goto(base + '/users');
  const moRow = admin.page.locator('tr[data-testid=user][data-email="mo@nordwerk.example"]');
  await moRow.locator('[data-testid=assign-role]').selectOption('workshop_manager');
  await Promise.all([admin.page.waitForURL(/#u-/), moRow.locator('[data-testid=assign]').click()]);
  const wmRole = moRow.locator('li[data-role=workshop_manager]');
  await wmRole.waitFor();
  assert.match(await wmRole.innerText(), /Workshop Manager/);
  assert.equal(await admin.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1), false, 'users page scrolls sideways');
  await admin.page.screenshot({ path: path.join(shots, 'users-assigned.png'), fullPage: true });
  await Promise.all([admin.page.waitForURL(/#u-/), wmRole.locator('[data-testid=revoke]').click()]);
  await admin.page.waitForLoadState('load');
  assert.equal(await moRow.locator('li[data-role=workshop_manager]').count(), 0, 'role not revoked');
  assert.equal(await moRow.locator('li[data-role=machine_operator]').count(), 1);

  step('the service error shows next to the form');
  const adminRow = admin.page.locator('tr[data-testid=user][data-email="admin@nordwerk.example"]');
  await Promise.all([admin.page.waitForLoadState('load'), adminRow.locator('li[data-role=tenant_admin] [data-testid=revoke]').click()]);
  assert.match(await adminRow.locator('[data-testid=revoke-error]').innerText(), /remove their own Tenant Admin role/);

  step('role choices follow delegation: Acme admin cannot newly assign Service Manager');
  const acme = await login('admin@acme.example');
  await acme.page.waitForSelector('[data-testid=users]');
  const offered = await acme.page.locator('[data-testid=invite-role] option').evaluateAll((os) => os.map((o) => o.value));
  assert.ok(offered.includes('service_technician'), 'assignable role missing: ' + offered);
  assert.ok(!offered.includes('service_manager'), 'deprecated Service Manager offered: ' + offered);
  assert.ok((await acme.page.locator('li[data-role=service_manager]').count()) > 0, 'held Service Manager role is listed');

  step('audit log shows the invitation');
  await admin.page.click('[data-testid=nav-audit]');
  await admin.page.waitForURL(/\/audit$/);
  const inviteEvent = admin.page.locator('[data-testid=audit-event][data-action="user.invite"]').first();
  assert.match(await inviteEvent.innerText(), /invited@nordwerk\.example/);
  const actions = await admin.page.locator('[data-testid=audit-event]').evaluateAll((rs) => rs.map((r) => r.dataset.action));
  assert.ok(actions.indexOf('role.revoke') < actions.indexOf('role.assign'), 'newest first: ' + actions);
  assert.equal(await admin.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1), false, 'audit page scrolls sideways');
  await admin.page.screenshot({ path: path.join(shots, 'audit.png'), fullPage: true });

  step('custom roles and company appearance');
  await admin.page.click('[data-testid=nav-roles]');
  await admin.page.fill('[data-testid=role-form] input[name=name]', 'Shift Lead');
  await admin.page.fill('[data-testid=role-form] input[name=rank]', '45');
  await admin.page.selectOption('[data-testid=role-form] select[name=feature_digital_shopfloor]', 'read');
  await Promise.all([admin.page.waitForURL(/\/roles$/), admin.page.click('[data-testid=create-role]')]);
  await admin.page.locator('[data-testid=role]', { hasText: 'Shift Lead' }).waitFor();
  await admin.page.screenshot({ path: path.join(shots, 'roles.png'), fullPage: true });
  await admin.page.click('[data-testid=nav-company]');
  await admin.page.fill('[data-testid=primary-color]', '#aa3300');
  await Promise.all([admin.page.waitForURL(/saved=1/), admin.page.click('[data-testid=company-save]')]);
  await admin.page.screenshot({ path: path.join(shots, 'company.png'), fullPage: true });
  await me.page.goto(base + '/cases');
  assert.equal(await me.page.locator('header.top').evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(170, 51, 0)', 'brand colour applies to every user of the tenant');
  await st.page.goto(base + '/cases');
  assert.notEqual(await st.page.locator('header.top').evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(170, 51, 0)', 'brand colour leaks to another tenant');

  step('non-admins get 403 on admin pages');
  for (const p of ['/users', '/audit', '/roles', '/company']) {
    const resp = await me.page.goto(base + p);
    assert.equal(resp.status(), 403, p);
  }

  for (const s of [me, mo, st, tab, admin, invited, acme]) assert.deepEqual(s.errors, [], 'page errors: ' + s.errors);
  console.log('browser test passed');
} finally {
  await browser.close();
}
