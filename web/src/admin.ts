// The admin console: accounts (filter, disable/enable, roles), the audit log with its
// filters, and the mesh's health (services answering and their per-operation statistics from
// `$SRV.STATS`). Every call is refused by the mesh unless the caller is an enabled admin.

import { client, describe, ok, type Schemas } from "./api";
import { announce, field, h, replace, when } from "./dom";
import * as people from "./people";


export function usersView(): HTMLElement {
  const root = h("div", { class: "page admin-users" });
  const users: Schemas["UserProfile"][] = [];
  let cursor: string | null | undefined;
  let filter = "";
  let onlyDisabled = false;
  const table = h("tbody");
  const more = h("button", { type: "button", class: "secondary", onclick: () => void load() }, "Load more accounts");

  const load = async (reset = false) => {
    try {
      if (reset) {
        users.length = 0;
        cursor = undefined;
      }
      const page = await ok(client.GET("/v1/admin/users", { params: { query: { limit: 100, cursor: cursor ?? undefined, disabled: onlyDisabled ? true : undefined } } }));
      users.push(...page.items);
      for (const u of page.items) people.remember(u);
      cursor = page.next_cursor;
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
    const needle = filter.trim().toLowerCase();
    const shown = users.filter((u) => !needle || u.nickname.toLowerCase().includes(needle) || u.phone.includes(needle) || u.id.startsWith(needle));
    replace(
      table,
      shown.map((u) => {
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
  const search = h("input", { type: "search", name: "filter", autocomplete: "off", oninput: () => { filter = search.value; render(); } });
  const disabledOnly = h("input", { type: "checkbox", name: "disabled", onchange: () => { onlyDisabled = disabledOnly.checked; void load(true); } });
  replace(
    root,
    h("h2", {}, "Accounts"),
    h("div", { class: "inline" }, field("Search accounts (nickname, phone or id)", search), field("Only disabled accounts", disabledOnly)),
    h("div", { class: "scroll" }, h("table", { "aria-label": "Accounts" }, h("thead", {}, h("tr", {}, ["Nickname", "Phone", "Roles", "State", "Registered", "Actions"].map((c) => h("th", { scope: "col" }, c)))), table)),
    more,
  );
  void load(true);
  return root;
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
