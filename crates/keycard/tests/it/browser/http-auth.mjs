// Visits a URL in headless Chromium (Debian's /usr/bin/chromium) with a user name and
// password for HTTP authentication, as a person answering the browser's sign-in prompt
// would. Prints one line: {"status": <the final status>, "body": <the page's text>}.
// usage: node http-auth.mjs URL USER PASSWORD
import { chromium } from "playwright-core";

const [url, username, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ httpCredentials: { username, password } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const response = await page.goto(url);
  const body = await response.text();
  console.log(JSON.stringify({ status: response.status(), body }));
} finally {
  await browser.close();
}
