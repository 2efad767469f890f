// Drives headless Chromium (Debian's /usr/bin/chromium) through keycard's login and consent
// pages at a phone's size, the way a person would: by the fields' labels and the buttons'
// names; then visits an application behind keycard and signs out. Prints two lines:
// {"url": <where the sign-in ended>, "overflow": <px of horizontal scroll>, "appCookie":
// <the Cookie header the application received>}; then, after a line on stdin,
// {"after": <the first heading after signing out>}.
// usage: node login.mjs CONFIG.json
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(cfg.authorize_url);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: cfg.screenshot, fullPage: true });
  await page.getByLabel("Username").fill(cfg.username);
  await page.getByLabel("Password").fill(cfg.password);
  await page.getByLabel("One-time code").fill(cfg.totp);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Allow access?" }).waitFor();
  await page.screenshot({ path: cfg.screenshot.replace(/\.png$/, "-consent.png"), fullPage: true });
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(cfg.redirect_prefix)),
    page.getByRole("button", { name: "Allow" }).click(),
  ]);
  const url = page.url();
  // An application behind keycard, in the same browser: which cookies reach it.
  await page.goto(cfg.proxied_url);
  const echoed = JSON.parse(await page.locator("body").innerText());
  const appCookie = echoed.headers.cookie ?? null;
  console.log(JSON.stringify({ url, overflow, appCookie }));
  // The test redeems the code meanwhile, and says when to go on with a line on stdin.
  await new Promise((resolve) => process.stdin.once("data", resolve));
  // Signing out at keycard: asked, confirmed, and then the sign-in page again.
  await page.goto(cfg.logout_url);
  await page.getByRole("heading", { name: "Sign out?" }).waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Signed out" }).waitFor();
  await page.goto(cfg.authorize_url);
  const after = await page.getByRole("heading").first().innerText();
  console.log(JSON.stringify({ after }));
  process.stdin.destroy();
} finally {
  await browser.close();
}
