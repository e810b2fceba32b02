// Shared helpers of the portal's browser tests: Debian's chromium driven
// by playwright-core, locked to loopback (Debian's wrapper otherwise
// reaches outside hosts), and logging in through the login form.
import { chromium } from 'playwright-core';

// launch starts headless chromium from CHROMIUM with networking limited
// to loopback.
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
      '--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=<-loopback>;127.0.0.1;localhost',
    ],
  });
}

// loginWith returns login(email, viewport, password): a fresh browser
// context logged in at base, with the page's script errors collected.
export function loginWith(browser, base, password) {
  return async function login(email, viewport = { width: 1280, height: 800 }, pw = password) {
    const ctx = await browser.newContext({ viewport });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(base + '/login');
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', pw);
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login')), page.click('button[type=submit]')]);
    return { ctx, page, errors };
  };
}

// overflows reports whether the page scrolls sideways.
export function overflows(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
}

export const step = (name) => console.log('step:', name);
