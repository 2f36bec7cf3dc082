// The console's shell: sign in or register, then a chat client (chats, friends, groups,
// devices) and, for administrators, the admin console (accounts, audit log, mesh health).
// Pages are hash routes (`#/chats`, `#/admin/health`), so the build works under any path.

import "./style.css";
import { client, describe, ok, type Schemas } from "./api";
import { announce, field, h, replace } from "./dom";
import * as people from "./people";
import { Chat } from "./chat";
import { Realtime, type Transport } from "./realtime";
import * as session from "./session";
import { devicesView, friendsView, groupsView } from "./social";
import { auditView, healthView, usersView } from "./admin";

const top = document.getElementById("top")!;
const main = document.getElementById("main")!;
// `?transport=sse` tries the SSE fallback (and the tests exercise it).
const realtime = new Realtime(new URLSearchParams(location.search).get("transport") === "sse");
const chat = new Chat(realtime);
let me: Schemas["UserProfile"] | null = null;
let transport: Transport = "offline";
let endedBecause = "";

realtime.onTransport = (t) => {
  transport = t;
  renderHeader();
};
realtime.on("notification", (n) => {
  announce(`Notification: ${n.kind.replaceAll("_", " ")}`);
  main.firstElementChild?.dispatchEvent(new Event("mesh:changed"));
});
session.onEnd((reason) => {
  realtime.stop();
  chat.reset();
  me = null;
  endedBecause = reason;
  location.hash = "#/login";
  route();
});

function signInView(): HTMLElement {
  const phone = h("input", { name: "phone", type: "tel", required: true, autocomplete: "username" });
  const password = h("input", { name: "password", type: "password", required: true, minlength: 8, autocomplete: "current-password" });
  const nickname = h("input", { name: "nickname", autocomplete: "nickname", maxlength: 64 });
  const error = h("p", { role: "alert", class: "error" }, endedBecause);
  const begin = async (pair: Schemas["TokenPair"] | Schemas["Registered"]) => {
    session.start(pair);
    me = await ok(client.GET("/v1/users/me"));
    people.remember(me);
    endedBecause = "";
    realtime.start();
    location.hash = "#/chats";
  };
  const submit = async (register: boolean) => {
    try {
      if (register) {
        await begin(await ok(client.POST("/v1/auth/register", { body: { phone: phone.value.trim(), password: password.value, nickname: nickname.value.trim() || phone.value.trim(), device_name: "console" } })));
      } else {
        await begin(await ok(client.POST("/v1/auth/login", { body: { phone: phone.value.trim(), password: password.value, device_name: "console" } })));
      }
    } catch (err) {
      error.textContent = describe(err);
    }
  };
  let registering = false;
  const form = h(
    "form",
    { class: "card", "aria-label": "Sign in", onsubmit: (e: Event) => { e.preventDefault(); void submit(registering); } },
    h("h2", {}, "Sign in or register"),
    error,
    field("Phone", phone),
    field("Password", password),
    field("Nickname (to register)", nickname),
    h("div", { class: "buttons" },
      h("button", { type: "submit", onclick: () => (registering = false) }, "Sign in"),
      h("button", { type: "submit", class: "secondary", onclick: () => (registering = true) }, "Register")),
  );
  return form;
}

function renderHeader(): void {
  // Any role beyond the default one may carry console permissions; the mesh checks each call.
  const admin = me?.roles.some((role) => role !== "user");
  const link = (href: string, text: string) => h("a", { href, "aria-current": location.hash.startsWith(href) ? "page" : null }, text);
  replace(
    top,
    h("h1", {}, h("a", { href: "#/chats" }, "nats-mesh")),
    me
      ? h(
          "nav",
          { "aria-label": "Main" },
          link("#/chats", "Chats"),
          link("#/friends", "Friends"),
          link("#/groups", "Groups"),
          link("#/devices", "Devices"),
          admin ? [link("#/admin/users", "Accounts"), link("#/admin/audit", "Audit"), link("#/admin/health", "Health")] : null,
        )
      : null,
    me
      ? h(
          "div",
          { class: "who" },
          h("span", { class: `transport ${transport}`, title: "realtime connection" }, transport),
          h("span", {}, me.nickname),
          h("button", { type: "button", class: "secondary", onclick: () => void signOut() }, "Sign out"),
        )
      : null,
  );
}

async function signOut(): Promise<void> {
  try {
    await ok(client.POST("/v1/auth/logout"));
  } catch {
    // signed out locally either way
  }
  session.end("You signed out.");
}

function route(): void {
  const hash = location.hash || "#/chats";
  const [, page = "", sub = ""] = hash.split("/");
  let view: HTMLElement;
  if (!session.current() || !me) {
    view = signInView();
  } else if (page === "friends") {
    view = friendsView((userId) => (location.hash = `#/chats/${encodeURIComponent(chat.privateWith(userId))}`));
  } else if (page === "groups") {
    view = groupsView((id) => (location.hash = `#/chats/${encodeURIComponent(id)}`));
  } else if (page === "devices") {
    view = devicesView();
  } else if (page === "admin" && sub === "users") {
    view = usersView();
  } else if (page === "admin" && sub === "audit") {
    view = auditView();
  } else if (page === "admin" && sub === "health") {
    view = healthView();
  } else {
    view = chat.view(sub ? decodeURIComponent(sub) : null);
  }
  renderHeader();
  const moved = main.firstElementChild !== null;
  replace(main, view);
  // A new page takes the focus (keyboard and screen reader users start at its content).
  if (moved && document.activeElement?.closest("header")) main.focus({ preventScroll: true });
  const heading = main.querySelector("h2");
  if (heading) document.title = `${heading.textContent} · nats-mesh console`;
}

window.addEventListener("hashchange", route);
route();
