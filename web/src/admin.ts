// The admin console: accounts (searched by the server, disable/enable, roles, a user's
// sessions with sign-out), the audit log with its filters, and the mesh's health (services
// answering and their per-operation statistics from `$SRV.STATS`). Every call is refused by the mesh unless the caller is an enabled admin.

import { client, describe, ok, type Schemas } from "./api";
import { announce, field, h, replace, when } from "./dom";
import * as people from "./people";


export function usersView(): HTMLElement {
  const root = h("div", { class: "page admin-users" });
  const users: Schemas["UserProfile"][] = [];
  let cursor: string | null | undefined;
  // Each search replaces the one before; an answer to an older search is dropped.
  let generation = 0;
  let typing: number | undefined;
  const table = h("tbody");
  const found = h("p", { class: "meta", "aria-live": "polite" });
  const detail = h("section", { id: "user-sessions", class: "user-sessions", "aria-label": "Sessions", hidden: true });
  const more = h("button", { type: "button", class: "secondary", onclick: () => void load(false) }, "Load more accounts");
  const search = h("input", { type: "search", name: "q", autocomplete: "off", maxlength: 64, placeholder: "+1555, Ann or an id" });
  const disabledOnly = h("input", { type: "checkbox", name: "disabled", onchange: () => void load(true) });

  // The server searches: phone prefix, nickname substring or exact id (`q`), paged.
  const load = async (reset: boolean) => {
    const mine = reset ? ++generation : generation;
    try {
      const q = search.value.trim() || undefined;
      const page = await ok(client.GET("/v1/admin/users", { params: { query: { q, limit: 50, cursor: reset ? undefined : (cursor ?? undefined), disabled: disabledOnly.checked ? true : undefined } } }));
      if (mine !== generation) return;
      if (reset) users.length = 0;
      users.push(...page.items);
      for (const u of page.items) people.remember(u);
      cursor = page.next_cursor;
      found.textContent = `${users.length}${cursor ? "+" : ""} account${users.length === 1 ? "" : "s"}${q ? ` matching “${q}”` : ""}`;
      render();
    } catch (err) {
      announce(describe(err));
    }
  };
  const update = async (user: Schemas["UserProfile"], call: Promise<{ data?: Schemas["UserProfile"]; error?: unknown; response: Response }>, done: string) => {
    try {
      const changed = await ok(call);
      users[users.indexOf(user)] = changed;
      announce(done);
    } catch (err) {
      announce(describe(err));
    }
    render();
  };
  const render = () => {
    replace(
      table,
      users.map((u) => {
        const admin = u.roles.includes("admin");
        const roles: string[] = admin ? u.roles.filter((r) => r !== "admin") : [...u.roles, "admin"];
        const path = { params: { path: { user_id: u.id } } };
        return h(
          "tr",
          {},
          h("td", {}, u.nickname),
          h("td", {}, u.phone),
          h("td", {}, u.roles.join(", ")),
          h("td", {}, u.disabled ? "disabled" : "active"),
          h("td", {}, when(u.created_at)),
          h(
            "td",
            { class: "actions" },
            h("button", { type: "button", class: "secondary", "aria-controls": "user-sessions", onclick: () => void showSessions(detail, u) }, `Sessions of ${u.nickname}`),
            u.disabled
              ? h("button", { type: "button", onclick: () => void update(u, client.POST("/v1/admin/users/{user_id}/enable", path), `${u.nickname} enabled`) }, `Enable ${u.nickname}`)
              : h("button", { type: "button", class: "danger", onclick: () => void update(u, client.POST("/v1/admin/users/{user_id}/disable", path), `${u.nickname} disabled`) }, `Disable ${u.nickname}`),
            h("button", { type: "button", class: "secondary", onclick: () => void update(u, client.PUT("/v1/admin/users/{user_id}/roles", { ...path, body: { roles } }), `${u.nickname}'s roles changed`) }, admin ? `Revoke admin from ${u.nickname}` : `Make ${u.nickname} admin`),
          ),
        );
      }),
    );
    more.hidden = !cursor;
  };
  search.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => void load(true), 300);
  });
  replace(
    root,
    h("h2", {}, "Accounts"),
    h(
      "form",
      { class: "inline", role: "search", "aria-label": "Search accounts", onsubmit: (e: Event) => { e.preventDefault(); window.clearTimeout(typing); void load(true); } },
      field("Search accounts (phone, nickname or id)", search),
      field("Only disabled accounts", disabledOnly),
      h("button", { type: "submit" }, "Search"),
    ),
    found,
    h("div", { class: "scroll" }, h("table", { "aria-label": "Accounts" }, h("thead", {}, h("tr", {}, ["Nickname", "Phone", "Roles", "State", "Registered", "Actions"].map((c) => h("th", { scope: "col" }, c)))), table)),
    more,
    detail,
  );
  void load(true);
  return root;
}

/** Fills `panel` with `user`'s active sessions and a way to sign each, or all, out. */
async function showSessions(panel: HTMLElement, user: Schemas["UserProfile"]): Promise<void> {
  const path = { params: { path: { user_id: user.id } } };
  const heading = h("h3", { tabindex: -1 }, `${user.nickname}'s sessions`);
  const signOut = async (call: Promise<{ data?: Schemas["LogoutReply"]; error?: unknown; response: Response }>) => {
    try {
      const done = await ok(call);
      announce(`${user.nickname}: ${done.revoked_sessions} session${done.revoked_sessions === 1 ? "" : "s"} signed out`);
    } catch (err) {
      announce(describe(err));
    }
    await showSessions(panel, user);
  };
  try {
    const sessions = await ok(client.GET("/v1/admin/users/{user_id}/sessions", path));
    panel.setAttribute("aria-label", `${user.nickname}'s sessions`);
    const device = (s: Schemas["SessionInfo"]) => s.device_name || "unnamed device";
    replace(
      panel,
      heading,
      sessions.items.length
        ? h(
            "ul",
            { class: "list", "aria-label": `Sessions of ${user.nickname}` },
            sessions.items.map((s) =>
              h(
                "li",
                {},
                h("span", { class: "name" }, device(s), s.current ? " (yours)" : ""),
                h("span", { class: "meta" }, `signed in ${when(s.created_at)} · last used ${when(s.last_used_at)} · ${s.ip ?? "no ip"}`),
                s.user_agent ? h("span", { class: "meta agent" }, s.user_agent) : null,
                h("button", { type: "button", class: "danger", "aria-label": `Sign out ${user.nickname}'s ${device(s)} session from ${when(s.created_at)}`, onclick: () => void signOut(client.DELETE("/v1/admin/users/{user_id}/sessions/{session_id}", { params: { path: { user_id: user.id, session_id: s.id } } })) }, "Sign out"),
              ),
            ),
          )
        : h("p", { class: "empty" }, `${user.nickname} is not signed in anywhere.`),
      h(
        "div",
        { class: "buttons" },
        sessions.items.length ? h("button", { type: "button", class: "danger", onclick: () => void signOut(client.DELETE("/v1/admin/users/{user_id}/sessions", path)) }, `Sign ${user.nickname} out everywhere`) : null,
        h("button", { type: "button", class: "secondary", onclick: () => void showSessions(panel, user) }, "Reload sessions"),
        h("button", { type: "button", class: "secondary", onclick: () => { panel.hidden = true; } }, "Close"),
      ),
    );
    panel.hidden = false;
    heading.focus();
  } catch (err) {
    announce(describe(err));
  }
}

export function auditView(): HTMLElement {
  const root = h("div", { class: "page admin-audit" });
  const userId = h("input", { name: "user_id", autocomplete: "off", placeholder: "actor's user id" });
  const action = h("input", { name: "action", autocomplete: "off", placeholder: "e.g. send_friend_request" });
  const from = h("input", { name: "from", type: "datetime-local" });
  const to = h("input", { name: "to", type: "datetime-local" });
  const rows = h("tbody");
  const more = h("button", { type: "button", class: "secondary", onclick: () => void load(false) }, "Older records");
  let cursor: string | null | undefined;

  const iso = (input: HTMLInputElement) => (input.value ? new Date(input.value).toISOString() : undefined);
  const load = async (reset: boolean) => {
    try {
      if (reset) {
        cursor = undefined;
        rows.replaceChildren();
      }
      const page = await ok(
        client.GET("/v1/admin/audit", {
          params: { query: { user_id: userId.value.trim() || undefined, action: action.value.trim() || undefined, from: iso(from), to: iso(to), limit: 50, cursor: cursor ?? undefined } },
        }),
      );
      await people.learn(page.items.map((r) => r.actor_id));
      rows.append(
        ...page.items.map((r) =>
          h("tr", {}, h("td", {}, when(r.at)), h("td", {}, r.actor_id ? people.nameOf(r.actor_id) : "anonymous"), h("td", {}, r.action), h("td", {}, `${r.method} ${r.path}`), h("td", {}, String(r.status)), h("td", {}, r.result), h("td", {}, r.client_ip ?? "")),
        ),
      );
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (err) {
      announce(describe(err));
    }
  };
  replace(
    root,
    h("h2", {}, "Audit log"),
    h(
      "form",
      { class: "inline", "aria-label": "Audit filters", onsubmit: (e: Event) => { e.preventDefault(); void load(true); } },
      field("Actor (user id)", userId),
      field("Action", action),
      field("From", from),
      field("To", to),
      h("button", { type: "submit" }, "Filter"),
    ),
    h("div", { class: "scroll" }, h("table", { "aria-label": "Audit records" }, h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Request", "Status", "Result", "Client"].map((c) => h("th", { scope: "col" }, c)))), rows)),
    more,
  );
  void load(true);
  return root;
}

export function healthView(): HTMLElement {
  const root = h("div", { class: "page admin-health" });
  const render = async () => {
    try {
      const health = await ok(client.GET("/v1/admin/health"));
      replace(
        root,
        h("h2", {}, "Mesh health"),
        h("button", { type: "button", class: "secondary", onclick: () => void render() }, "Refresh"),
        h("h3", {}, "Outbox backlog"),
        health.outbox
          ? h("ul", { class: "list", "aria-label": "Outbox backlog" }, health.outbox.schemas.map((b) => h("li", {}, h("span", { class: "name" }, b.schema), `${b.backlog} unrelayed`, b.backlog ? h("span", { class: "meta" }, `oldest ${b.oldest_age_seconds} s`) : null)))
          : h("p", { role: "alert" }, "The outbox role did not answer."),
        h("h3", {}, "Chat ingest partitions"),
        h(
          "ul",
          { class: "partitions", "aria-label": "Chat ingest partitions" },
          health.partitions.map((p) => h("li", { class: p.owner ? "up" : "down" }, `#${p.partition} `, h("span", { class: "meta" }, p.owner ? `worker ${p.owner.slice(0, 8)}` : "no owner"))),
        ),
        h("h3", {}, "Services"),
        h(
          "ul",
          { class: "services", "aria-label": "Services" },
          health.services.map((s) =>
            h(
              "li",
              { class: s.instances.length ? "up" : "down" },
              h("h4", {}, `${s.service}: ${s.instances.length} instance${s.instances.length === 1 ? "" : "s"} answering`),
              s.instances.map((i) =>
                h(
                  "div",
                  { class: "scroll" },
                  h(
                    "table",
                    { "aria-label": `${s.service} instance ${i.id}` },
                    h("caption", {}, `${s.name} ${i.version} · ${i.id} · started ${when(i.started)}`),
                    h("thead", {}, h("tr", {}, ["Operation", "Requests", "Errors", "Mean ms", "Last error"].map((c) => h("th", { scope: "col" }, c)))),
                    h(
                      "tbody",
                      {},
                      [...i.endpoints]
                        .sort((a, b) => b.num_requests - a.num_requests || a.name.localeCompare(b.name))
                        .map((e) => h("tr", {}, h("td", {}, e.name), h("td", {}, e.num_requests), h("td", {}, e.num_errors), h("td", {}, (e.average_processing_time / 1e6).toFixed(2)), h("td", {}, e.last_error))),
                    ),
                  ),
                ),
              ),
            ),
          ),
        ),
      );
    } catch (err) {
      replace(root, h("h2", {}, "Mesh health"), h("p", { role: "alert" }, describe(err)));
    }
  };
  void render();
  return root;
}
