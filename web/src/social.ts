// Friends (with presence), friend requests (send by phone, accept, reject, cancel) and groups
// (create, join by id, members), refreshed when a notification says something changed. Each
// list is read whole, every page of it (`allPages`, up to its bound).

import { allPages, client, describe, MAX_PAGES, ok, type Schemas } from "./api";
import { announce, field, h, replace, when } from "./dom";
import * as people from "./people";
import * as session from "./session";

/** A line saying a list was cut at `allPages`' bound, when it was (`next_cursor` left). */
function cut(list: { items: unknown[]; next_cursor: string | null }): HTMLElement | null {
  return list.next_cursor ? h("li", { class: "empty" }, `Only the first ${list.items.length} are shown (${MAX_PAGES} pages).`) : null;
}

/** Runs `action`, announces `done` or the problem, then re-renders with `after`. */
async function act(action: () => Promise<unknown>, done: string, after: () => void): Promise<void> {
  try {
    await action();
    announce(done);
  } catch (err) {
    announce(describe(err));
  }
  after();
}

export function friendsView(openChat: (userId: string) => void): HTMLElement {
  const root = h("div", { class: "page friends" });
  const render = async () => {
    const me = session.current()?.userId;
    const [friends, incoming, outgoing] = await Promise.all([
      allPages((cursor) => ok(client.GET("/v1/friends", { params: { query: { limit: 100, cursor } } }))),
      allPages((cursor) => ok(client.GET("/v1/friend-requests", { params: { query: { direction: "incoming", status: "pending", limit: 100, cursor } } }))),
      allPages((cursor) => ok(client.GET("/v1/friend-requests", { params: { query: { direction: "outgoing", status: "pending", limit: 100, cursor } } }))),
    ]);
    const ids = [...friends.items.map((f) => f.user_id), ...incoming.items.map((r) => r.from_user_id), ...outgoing.items.map((r) => r.to_user_id)];
    await people.learn(ids);
    if (friends.items.length) await people.loadPresence(friends.items.map((f) => f.user_id)).catch(() => undefined);
    const phone = h("input", { name: "phone", type: "tel", required: true, autocomplete: "off", placeholder: "+15550001" });
    const note = h("input", { name: "message", maxlength: 200, autocomplete: "off" });
    const add = h(
      "form",
      {
        class: "inline",
        "aria-label": "Add a friend",
        onsubmit: (e: Event) => {
          e.preventDefault();
          void act(
            async () => {
              const found = await ok(client.GET("/v1/users", { params: { query: { phone: phone.value.trim() } } }));
              const user = found.items[0];
              if (!user || user.id === me) throw new Error("No such user");
              people.remember(user);
              await ok(client.POST("/v1/friend-requests", { body: { user_id: user.id, message: note.value || null } }));
            },
            "Friend request sent",
            () => void render(),
          );
        },
      },
      field("Phone of the friend to add", phone),
      field("Message (optional)", note),
      h("button", { type: "submit" }, "Send friend request"),
    );
    const requestItem = (r: Schemas["FriendRequest"], incomingSide: boolean) =>
      h(
        "li",
        {},
        h("span", {}, incomingSide ? `${people.nameOf(r.from_user_id)} wants to be friends` : `Waiting for ${people.nameOf(r.to_user_id)}`),
        r.message ? h("q", {}, r.message) : null,
        incomingSide
          ? [
              h("button", { type: "button", onclick: () => void act(() => ok(client.POST("/v1/friend-requests/{request_id}/accept", { params: { path: { request_id: r.id } } })), "Friend request accepted", () => void render()) }, `Accept ${people.nameOf(r.from_user_id)}`),
              h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.POST("/v1/friend-requests/{request_id}/reject", { params: { path: { request_id: r.id } } })), "Friend request rejected", () => void render()) }, "Reject"),
            ]
          : h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.POST("/v1/friend-requests/{request_id}/cancel", { params: { path: { request_id: r.id } } })), "Friend request cancelled", () => void render()) }, "Cancel"),
      );
    replace(
      root,
      h("h2", {}, "Friends"),
      add,
      h("h3", {}, "Requests"),
      h("ul", { class: "list", "aria-label": "Friend requests" }, incoming.items.map((r) => requestItem(r, true)), outgoing.items.map((r) => requestItem(r, false)), incoming.items.length + outgoing.items.length === 0 ? h("li", { class: "empty" }, "No pending requests.") : null, cut(incoming), cut(outgoing)),
      h("h3", {}, "Your friends"),
      h(
        "ul",
        { class: "list", "aria-label": "Your friends" },
        friends.items.length === 0 ? h("li", { class: "empty" }, "No friends yet.") : null,
        friends.items.map((f) =>
          h(
            "li",
            {},
            h("span", { class: people.isOnline(f.user_id) ? "dot on" : "dot", role: "img", "aria-label": people.isOnline(f.user_id) ? "online" : "offline" }),
            h("span", { class: "name" }, f.remark || people.nameOf(f.user_id)),
            h("span", { class: "meta" }, `friends since ${when(f.since)}`),
            h("button", { type: "button", onclick: () => openChat(f.user_id) }, `Message ${people.nameOf(f.user_id)}`),
            h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.DELETE("/v1/friends/{user_id}", { params: { path: { user_id: f.user_id } } })), "Friend removed", () => void render()) }, "Remove"),
          ),
        ),
        cut(friends),
      ),
    );
  };
  void render().catch((err) => announce(describe(err)));
  root.addEventListener("mesh:changed", () => void render().catch((err) => announce(describe(err))));
  return root;
}

export function groupsView(openChat: (conversationId: string) => void): HTMLElement {
  const root = h("div", { class: "page groups" });
  const render = async () => {
    const groups = await allPages((cursor) => ok(client.GET("/v1/groups", { params: { query: { limit: 100, cursor } } })));
    const name = h("input", { name: "name", required: true, maxlength: 64, autocomplete: "off" });
    const policy = h("select", { name: "join_policy" }, h("option", { value: "open" }, "anyone may join"), h("option", { value: "approval" }, "needs approval"));
    const joinId = h("input", { name: "group_id", required: true, autocomplete: "off", placeholder: "group id" });
    replace(
      root,
      h("h2", {}, "Groups"),
      h(
        "form",
        {
          class: "inline",
          "aria-label": "Create a group",
          onsubmit: (e: Event) => {
            e.preventDefault();
            void act(() => ok(client.POST("/v1/groups", { body: { name: name.value.trim(), join_policy: policy.value as Schemas["JoinPolicy"] } })), "Group created", () => void render());
          },
        },
        field("Group name", name),
        field("Join policy", policy),
        h("button", { type: "submit" }, "Create group"),
      ),
      h(
        "form",
        {
          class: "inline",
          "aria-label": "Join a group",
          onsubmit: (e: Event) => {
            e.preventDefault();
            void act(() => ok(client.POST("/v1/groups/{group_id}/join", { params: { path: { group_id: joinId.value.trim() } }, body: {} })), "Asked to join", () => void render());
          },
        },
        field("Group id to join", joinId),
        h("button", { type: "submit" }, "Join"),
      ),
      h(
        "ul",
        { class: "list", "aria-label": "Your groups" },
        groups.items.length === 0 ? h("li", { class: "empty" }, "No groups yet.") : null,
        groups.items.map((g) =>
          h(
            "li",
            {},
            h("span", { class: "name" }, g.name),
            h("span", { class: "meta" }, `${g.member_count}/${g.max_members} members · ${g.my_role ?? ""} · id ${g.id}`),
            h("button", { type: "button", onclick: () => openChat(`g:${g.id}`) }, `Open ${g.name} chat`),
            g.my_role === "owner" || g.my_role === "admin"
              ? h("button", { type: "button", class: "secondary", onclick: () => void showRequests(g) }, `Join requests for ${g.name}`)
              : null,
            g.my_role === "owner"
              ? h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.DELETE("/v1/groups/{group_id}", { params: { path: { group_id: g.id } } })), "Group dissolved", () => void render()) }, "Dissolve")
              : h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.POST("/v1/groups/{group_id}/leave", { params: { path: { group_id: g.id } } })), "Left the group", () => void render()) }, "Leave"),
          ),
        ),
        cut(groups),
      ),
    );
  };
  const requests = h("section", { "aria-label": "Join requests" });
  const showRequests = async (g: Schemas["Group"]) => {
    try {
      // Only pending ones, asked of the server: filtering a first page here would miss the
      // pending requests behind decided ones.
      const page = await allPages((cursor) =>
        ok(client.GET("/v1/groups/{group_id}/requests", { params: { path: { group_id: g.id }, query: { status: "pending", limit: 100, cursor } } })),
      );
      const pending = page.items;
      await people.learn(pending.map((r) => r.user_id));
      const decide = (r: Schemas["GroupJoinRequest"], verdict: "approve" | "reject") => {
        const path = { params: { path: { group_id: g.id, request_id: r.id } } };
        const call = verdict === "approve"
          ? client.POST("/v1/groups/{group_id}/requests/{request_id}/approve", path)
          : client.POST("/v1/groups/{group_id}/requests/{request_id}/reject", path);
        void act(() => ok(call), `Request ${verdict === "approve" ? "approved" : "rejected"}`, () => void showRequests(g));
      };
      replace(
        requests,
        h("h3", {}, `Join requests for ${g.name}`),
        h(
          "ul",
          { class: "list" },
          pending.length === 0 ? h("li", { class: "empty" }, "No pending requests.") : null,
          pending.map((r) =>
            h(
              "li",
              {},
              h("span", { class: "name" }, people.nameOf(r.user_id)),
              r.message ? h("q", {}, r.message) : null,
              h("button", { type: "button", onclick: () => decide(r, "approve") }, `Approve ${people.nameOf(r.user_id)}`),
              h("button", { type: "button", class: "secondary", onclick: () => decide(r, "reject") }, "Reject"),
            ),
          ),
          cut(page),
        ),
      );
    } catch (err) {
      announce(describe(err));
    }
  };
  void render().catch((err) => announce(describe(err)));
  const page = h("div", {}, root, requests);
  page.addEventListener("mesh:changed", () => void render().catch((err) => announce(describe(err))));
  return page;
}

export function devicesView(): HTMLElement {
  const root = h("div", { class: "page devices" });
  const render = async () => {
    const sessions = await ok(client.GET("/v1/sessions"));
    replace(
      root,
      h("h2", {}, "Signed-in devices"),
      h(
        "ul",
        { class: "list", "aria-label": "Signed-in devices" },
        sessions.items.map((s) =>
          h(
            "li",
            {},
            h("span", { class: "name" }, s.device_name || s.user_agent || "device", s.current ? " (this one)" : ""),
            h("span", { class: "meta" }, `since ${when(s.created_at)} · last used ${when(s.last_used_at)} · ${s.ip ?? ""}`),
            s.current ? null : h("button", { type: "button", class: "secondary", onclick: () => void act(() => ok(client.DELETE("/v1/sessions/{session_id}", { params: { path: { session_id: s.id } } })), "Device signed out", () => void render()) }, "Sign out this device"),
          ),
        ),
      ),
    );
  };
  void render().catch((err) => announce(describe(err)));
  return root;
}
