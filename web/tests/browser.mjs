// Browser tests of the console against a running mesh (scripts/web-test.sh starts one):
// Playwright drives Debian's Chromium through the pages as people would. Each step waits for
// what the page shows (Playwright's auto-waiting), never for a fixed time.
//
// Env: MESH_BASE (http://127.0.0.1:PORT), CHROMIUM (the browser), ADMIN_PHONE (a bootstrap
// admin's phone), OUT (where screenshots go), ACCESS_TTL_SECS (the mesh's access-token
// lifetime, short in the test so that pages must refresh their tokens to keep working).

import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";

const base = process.env.MESH_BASE;
const out = process.env.OUT ?? "target/web-test";
const adminPhone = process.env.ADMIN_PHONE;
const console_ = `${base}/console/`;
const run = Date.now().toString().slice(-7);
const phone = (n) => `+1${n}${run}`;
const password = "correct horse battery";
const results = [];
const accessTtlSecs = Number(process.env.ACCESS_TTL_SECS ?? 900);
/** How long the edge still takes an expired access token (`LEEWAY_SECS` in edge/src/token.rs). */
const tokenLeewaySecs = 30;

await mkdir(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push([name, true]);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${err.stack ?? err}`);
    throw err;
  }
}

/** What a page sent: its token refreshes and the bearer tokens of its API calls, in order. */
const traffic = new Map();

async function newPage(viewport = { width: 1200, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const seen = { refreshes: 0, tokens: [] };
  traffic.set(page, seen);
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path === "/v1/auth/refresh") seen.refreshes += 1;
    const bearer = request.headers().authorization;
    if (bearer && path.startsWith("/v1/")) seen.tokens.push(bearer);
  });
  page.on("pageerror", (err) => console.log(`page error: ${err.message}`));
  page.on("console", (msg) => msg.type() === "error" && console.log(`console error: ${msg.text()}`));
  return page;
}

async function register(page, phoneNumber, nickname) {
  await page.goto(console_);
  await page.getByLabel("Phone").fill(phoneNumber);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Nickname (to register)").fill(nickname);
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor();
  await page.locator(".transport.websocket, .transport.sse").waitFor();
}

async function signIn(page, phoneNumber) {
  await page.getByLabel("Phone").fill(phoneNumber);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
}

async function apiLogin(phoneNumber, device) {
  const res = await fetch(`${base}/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ phone: phoneNumber, password, device_name: device }),
  });
  if (!res.ok) throw new Error(`login ${res.status}`);
  return (await res.json()).access_token;
}

/** A person using the API directly (registered here), for setting up what a page then shows. */
async function apiUser(phoneNumber, nickname) {
  const res = await fetch(`${base}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ phone: phoneNumber, password, nickname, device_name: "script" }),
  });
  if (!res.ok) throw new Error(`register ${res.status}`);
  let token = (await res.json()).access_token;
  /** One call; a refusal for now (429, 503) is tried again after the wait it asks for. */
  const call = async (method, path, body) => {
    for (let attempt = 0; ; attempt++) {
      const answer = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      if (answer.ok) return answer.status === 204 ? null : answer.json();
      if (attempt < 10 && (answer.status === 429 || answer.status === 503)) {
        await new Promise((r) => setTimeout(r, Number(answer.headers.get("retry-after") ?? 1) * 1000));
      } else if (attempt < 10 && answer.status === 401) {
        token = await apiLogin(phoneNumber, "script"); // the test mesh's tokens live seconds
      } else {
        throw new Error(`${method} ${path}: ${answer.status} ${await answer.text()}`);
      }
    }
  };
  return { call };
}

/** Waits until the element with `role` and `name` has the keyboard focus. */
async function expectFocused(page, role, name) {
  await page.getByRole(role, { name }).waitFor();
  await page.waitForFunction(([r, n]) => {
    const el = document.activeElement;
    return el && (el.getAttribute("role") ?? el.tagName.toLowerCase().replace(/^h[1-6]$/, "heading")) === r && el.textContent === n;
  }, [role, name]);
}

/**
 * Presses `refresh` until `locator` shows, as a person would press it again: what it waits for
 * is written asynchronously (the audit log, the operation log), so one look may come too early.
 */
async function refreshUntilShown(locator, refresh, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await refresh();
    try {
      await locator.waitFor({ timeout: 1_000 });
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw err;
    }
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`);
}

let ann, bob, admin, annOnPhone, bobSince;
const annPhone = phone(201), bobPhone = phone(202);
try {
  await step("the console is served with its content types and policy", async () => {
    const res = await fetch(console_);
    expectEqual(res.status, 200, "status");
    expectEqual(res.headers.get("content-type"), "text/html; charset=utf-8", "content type");
    if (!res.headers.get("content-security-policy")?.includes("script-src 'self'")) throw new Error("no CSP");
    const script = (await res.text()).match(/src="\.\/(assets\/[^"]+\.js)"/)?.[1];
    const js = await fetch(`${console_}${script}`);
    expectEqual(js.headers.get("content-type"), "text/javascript; charset=utf-8", "script type");
  });

  ann = await newPage();
  bob = await newPage();
  await step("two people register", async () => {
    await ann.goto(console_);
    await shot(ann, "sign-in");
    await register(ann, annPhone, "Ann");
    await register(bob, bobPhone, "Bob");
    bobSince = Date.now();
  });

  await step("they become friends", async () => {
    await bob.goto(`${console_}#/friends`);
    await ann.goto(`${console_}#/friends`);
    await ann.getByLabel("Phone of the friend to add").fill(bobPhone);
    await ann.getByLabel("Message (optional)").fill("hi, it's Ann");
    await ann.getByRole("button", { name: "Send friend request" }).click();
    await ann.getByText("Waiting for Bob").waitFor();
    // Bob's page refreshes on the live notification.
    await bob.getByRole("button", { name: "Accept Ann" }).click();
    await bob.getByRole("button", { name: "Message Ann" }).waitFor();
    await ann.getByRole("button", { name: "Message Bob" }).waitFor();
    await shot(bob, "friends");
  });

  await step("they exchange messages live", async () => {
    await bob.goto(`${console_}#/chats`);
    await ann.getByRole("button", { name: "Message Bob" }).click();
    await ann.getByRole("textbox", { name: "Message", exact: true }).fill("hello bob");
    await ann.getByRole("button", { name: "Send" }).click();
    await ann.getByRole("log", { name: "Messages" }).getByText("hello bob").waitFor();
    // Bob's list shows the new conversation with one unread message, without a reload.
    await bob.getByLabel("1 unread").waitFor();
    await shot(bob, "chats-unread");
    await bob.getByRole("link", { name: /Ann/ }).click();
    await bob.getByRole("log", { name: "Messages" }).getByText("hello bob").waitFor();
    await bob.getByRole("textbox", { name: "Message", exact: true }).fill("hi ann");
    await bob.getByRole("button", { name: "Send" }).click();
    await ann.getByRole("log", { name: "Messages" }).getByText("hi ann").waitFor();
    // Ann's first message shows Bob's read receipt.
    await ann.locator(".message.mine", { hasText: "hello bob" }).getByText("read").waitFor();
    await bob.getByRole("textbox", { name: "Message", exact: true }).pressSequentially("typing…");
    await ann.getByText("Bob typing…").waitFor();
    await shot(ann, "conversation");
  });

  await step("a message lost in flight is resent, across a reconnect, until stored", async () => {
    // Bob's second device, whose WebSocket the test can cut: the first `send` frame is
    // swallowed (lost in flight), then the connection drops; the page must reconnect and send
    // the same message again until the server says `stored`.
    const device = await newPage();
    let dropSends = false;
    let route;
    await device.routeWebSocket(/\/v1\/ws$/, (ws) => {
      const server = ws.connectToServer();
      route = { ws, server };
      ws.onMessage((frame) => {
        if (dropSends && JSON.parse(frame).type === "send") return;
        server.send(frame);
      });
    });
    await device.goto(console_);
    await signIn(device, bobPhone);
    await device.locator(".transport.websocket").waitFor();
    await device.getByRole("link", { name: /Ann/ }).click();
    dropSends = true;
    await device.getByRole("textbox", { name: "Message", exact: true }).fill("lost once, resent");
    await device.getByRole("button", { name: "Send" }).click();
    await device.locator(".message.pending", { hasText: "lost once, resent" }).waitFor();
    dropSends = false;
    const cut = route;
    await cut.server.close();
    await cut.ws.close({ code: 4999, reason: "cut by the test" });
    await device.locator(".message:not(.pending)", { hasText: "lost once, resent" }).waitFor();
    await ann.getByRole("log", { name: "Messages" }).getByText("lost once, resent").waitFor();
    expectEqual(await ann.getByRole("log", { name: "Messages" }).getByText("lost once, resent").count(), 1, "copies Ann sees");
    await device.context().close();
  });

  await step("a reload keeps the history", async () => {
    await ann.reload();
    await signIn(ann, annPhone);
    await ann.getByRole("link", { name: /Bob/ }).click();
    const log = ann.getByRole("log", { name: "Messages" });
    await log.getByText("hello bob").waitFor();
    await log.getByText("hi ann").waitFor();
  });

  await step("groups and devices pages", async () => {
    await ann.goto(`${console_}#/groups`);
    await ann.getByLabel("Group name").fill("Climbers");
    await ann.getByLabel("Join policy").selectOption("approval");
    await ann.getByRole("button", { name: "Create group" }).click();
    await ann.getByRole("button", { name: "Open Climbers chat" }).waitFor();
    const listed = await ann.getByRole("list", { name: "Your groups" }).textContent();
    const groupId = listed.match(/id ([0-9a-f-]{36})/)?.[1];
    if (!groupId) throw new Error(`no group id in ${listed}`);
    await bob.goto(`${console_}#/groups`);
    await bob.getByLabel("Group id to join").fill(groupId);
    await bob.getByRole("button", { name: "Join", exact: true }).click();
    // Ann lists the pending requests once Bob's is in (the list does not refresh by itself).
    await bob.getByText("Asked to join").waitFor();
    await ann.getByRole("button", { name: "Join requests for Climbers" }).click();
    await ann.getByRole("button", { name: "Approve Bob" }).click();
    // Bob's page refreshes on the approval notification.
    await bob.getByRole("button", { name: "Open Climbers chat" }).waitFor();
    await shot(ann, "groups");
    await ann.goto(`${console_}#/devices`);
    await ann.getByText("(this one)").waitFor();
    await shot(ann, "devices");
  });

  await step("a session revoked from another device logs the page out", async () => {
    const token = await apiLogin(annPhone, "phone");
    const auth = { authorization: `Bearer ${token}` };
    const sessions = await (await fetch(`${base}/v1/sessions`, { headers: auth })).json();
    const consoles = sessions.items.filter((s) => s.device_name === "console");
    if (consoles.length === 0) throw new Error("no console session listed");
    for (const s of consoles) {
      const res = await fetch(`${base}/v1/sessions/${s.id}`, { method: "DELETE", headers: auth });
      if (!res.ok) throw new Error(`revoke ${res.status}`);
    }
    await ann.getByRole("form", { name: "Sign in" }).getByText(/revoked/).waitFor();
  });

  await step("the SSE fallback delivers messages, and the page reads at phone width", async () => {
    const phonePage = (annOnPhone = await newPage({ width: 390, height: 844 }));
    await phonePage.goto(`${console_}?transport=sse`);
    await signIn(phonePage, annPhone);
    await phonePage.locator(".transport.sse").waitFor();
    await phonePage.getByRole("link", { name: /Bob/ }).click();
    await phonePage.getByRole("textbox", { name: "Message", exact: true }).fill("sent over REST, seen over SSE");
    await phonePage.getByRole("button", { name: "Send" }).click();
    await phonePage.locator(".message:not(.pending)", { hasText: "sent over REST, seen over SSE" }).waitFor();
    const overflow = await phonePage.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`the page is ${overflow}px wider than a phone`);
    await shot(phonePage, "phone-conversation");
  });
  await step("the conversation list shows conversations beyond its first page, and new ones live", async () => {
    // A page of GET /v1/conversations carries at most 512 KiB of conversations with their last
    // messages (services/chat/src/domain/page.rs): with a 16 KiB last message of quotes each
    // (twice that escaped), about 15 fit in one. Cat owns 20 groups, each with such a message.
    const catPhone = phone(203);
    const cat = await apiUser(catPhone, "Cat");
    const big = '"'.repeat(16 * 1024);
    const groups = [];
    for (let i = 0; i < 20; i++) {
      const group = await cat.call("POST", "/v1/groups", { name: `Shelf ${i}`, join_policy: "open" });
      await cat.call("POST", "/v1/messages", { client_id: `shelf-${run}-${i}`, conversation_id: `g:${group.id}`, to: null, body: big, kind: "text" });
      groups.push(group.id);
    }
    // Messages are stored asynchronously: wait until the API lists every conversation, and
    // check that it takes more than one page (else this step would test nothing).
    let pages = 0;
    for (const deadline = Date.now() + 15_000; ; ) {
      const listed = [];
      let cursor = null;
      pages = 0;
      do {
        const query = new URLSearchParams({ limit: "200", ...(cursor ? { cursor } : {}) });
        const page = await cat.call("GET", `/v1/conversations?${query}`);
        listed.push(...page.items);
        cursor = page.next_cursor;
        pages += 1;
      } while (cursor);
      if (listed.length >= groups.length) break;
      if (Date.now() > deadline) throw new Error(`only ${listed.length} of ${groups.length} conversations stored`);
      await new Promise((r) => setTimeout(r, 250));
    }
    if (pages < 2) throw new Error(`${groups.length} conversations fit in one page: the step needs more`);
    const page = await newPage();
    await page.goto(console_);
    await signIn(page, catPhone);
    await page.locator(".transport.websocket").waitFor();
    const list = page.getByRole("list", { name: "Conversations" });
    // By address: the titles ("Group " and the id's first 8 digits) are alike for ids made together.
    const link = (id) => list.locator(`a[href="#/chats/${encodeURIComponent(`g:${id}`)}"]`);
    for (const id of groups) await link(id).waitFor();
    expectEqual(await list.getByRole("link").count(), groups.length, `conversations listed (the API took ${pages} pages)`);
    // A message in a conversation the page has not loaded shows that conversation, live.
    const late = await cat.call("POST", "/v1/groups", { name: "Late shelf", join_policy: "open" });
    await cat.call("POST", "/v1/messages", { client_id: `late-${run}`, conversation_id: `g:${late.id}`, to: null, body: "a late one", kind: "text" });
    await link(late.id).waitFor();
    expectEqual(await list.getByRole("link").count(), groups.length + 1, "conversations listed after a new one");
    await shot(page, "chats-many");
    await page.context().close();
  });

  await step("tokens are refreshed before they expire and the page keeps working", async () => {
    // Bob's page has lived longer than an access token (the mesh runs with a short TTL); wait
    // until it has outlived one token and the edge's leeway, then use it.
    const outlived = bobSince + (accessTtlSecs + tokenLeewaySecs + 1) * 1000;
    await bob.waitForFunction((at) => Date.now() > at, outlived, { timeout: (accessTtlSecs + tokenLeewaySecs + 15) * 1000, polling: 250 });
    const seen = traffic.get(bob);
    if (seen.refreshes < 1) throw new Error("the page never refreshed its access token");
    // Before expiry, not on every answer: at most about one refresh per half token life.
    const most = Math.ceil((Date.now() - bobSince) / (accessTtlSecs * 500)) + 3;
    if (seen.refreshes > most) throw new Error(`${seen.refreshes} refreshes, more than ${most}: a refresh storm`);
    await bob.goto(`${console_}#/devices`);
    await bob.getByText("(this one)").waitFor();
    const last = seen.tokens.at(-1);
    if (last === seen.tokens[0]) throw new Error("the page still sends its first access token");
    // The realtime connection lives on too: Bob sees Ann's new message without a reload.
    await bob.goto(`${console_}#/chats`);
    await bob.getByRole("link", { name: /Ann/ }).click();
    await annOnPhone.getByRole("textbox", { name: "Message", exact: true }).fill("still live after a refresh");
    await annOnPhone.getByRole("button", { name: "Send" }).click();
    await bob.getByRole("log", { name: "Messages" }).getByText("still live after a refresh").waitFor();
    await bob.locator(".transport.websocket").waitFor();
    console.log(`     ${seen.refreshes} refreshes with a ${accessTtlSecs} s token`);
  });

  await step("an admin searches accounts and signs another user's device out", async () => {
    admin = await newPage();
    await register(admin, adminPhone, "Root");
    await admin.getByRole("link", { name: "Accounts" }).click();
    const accounts = admin.getByRole("table", { name: "Accounts" });
    await accounts.getByRole("cell", { name: "Bob", exact: true }).waitFor();
    // The server searches: typing a nickname part asks /v1/admin/users with `q`.
    const searched = admin.waitForRequest((r) => r.url().includes("/v1/admin/users?") && new URL(r.url()).searchParams.get("q") === "an");
    await admin.getByLabel("Search accounts (phone, nickname or id)").fill("an");
    await searched;
    await accounts.getByRole("cell", { name: "Bob", exact: true }).waitFor({ state: "detached" });
    await accounts.getByRole("cell", { name: "Ann", exact: true }).waitFor();
    await shot(admin, "admin-accounts");
    await admin.getByRole("button", { name: "Sessions of Ann" }).click();
    const sessions = admin.getByRole("list", { name: "Sessions of Ann" });
    const session = (device) => sessions.getByRole("listitem").filter({ has: admin.getByText(device, { exact: true }) });
    await session("phone").waitFor();
    await expectFocused(admin, "heading", "Ann's sessions");
    await shot(admin, "admin-sessions");
    // At phone width the tables scroll inside the page, which itself does not.
    await admin.setViewportSize({ width: 390, height: 844 });
    const overflow = await admin.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`the admin page is ${overflow}px wider than a phone`);
    await shot(admin, "phone-admin-sessions");
    await admin.setViewportSize({ width: 1200, height: 800 });
    // Ann's console on her phone is her one `console` session still active.
    await session("console").getByRole("button", { name: /^Sign out Ann's console session/ }).click();
    await annOnPhone.getByRole("form", { name: "Sign in" }).getByText(/revoked|ended/).waitFor();
    await session("console").waitFor({ state: "detached" });
    await session("phone").waitFor();
    await shot(annOnPhone, "phone-logged-out");
  });

  await step("an admin disables a user and the user's page logs out", async () => {
    await admin.getByLabel("Search accounts (phone, nickname or id)").fill(bobPhone);
    await admin.getByRole("button", { name: "Search", exact: true }).click();
    await admin.getByRole("table", { name: "Accounts" }).getByRole("cell", { name: "Ann", exact: true }).waitFor({ state: "detached" });
    await admin.getByRole("button", { name: "Disable Bob" }).click();
    await admin.getByRole("button", { name: "Enable Bob" }).waitFor();
    await bob.getByRole("form", { name: "Sign in" }).getByText(/revoked|ended/).waitFor();
    await shot(bob, "logged-out");
  });

  await step("the admin reads the audit log and the mesh's health", async () => {
    await admin.getByRole("link", { name: "Audit" }).click();
    await admin.getByLabel("Action").fill("admin_disable_user");
    await refreshUntilShown(
      admin.getByRole("table", { name: "Audit records" }).getByText("admin_disable_user").first(),
      () => admin.getByRole("button", { name: "Filter" }).click(),
    );
    await shot(admin, "admin-audit");
    await admin.getByRole("link", { name: "Health" }).click();
    for (const service of ["user", "social", "chat", "outbox"]) {
      await admin.getByRole("heading", { name: `${service}: 1 instance answering` }).waitFor();
    }
    await refreshUntilShown(admin.getByRole("cell", { name: "admin_set_disabled" }).first(), () =>
      admin.getByRole("button", { name: "Refresh" }).click(),
    );
    await admin.getByRole("list", { name: "Outbox backlog" }).getByText("social").waitFor();
    const owned = admin.getByRole("list", { name: "Chat ingest partitions" }).getByText(/worker/);
    await owned.first().waitFor();
    await shot(admin, "admin-health");
  });

} catch {
  // reported by step()
} finally {
  await browser.close();
}
const failed = results.filter(([, passed]) => !passed).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed > 0 || results.length === 0 ? 1 : 0);
