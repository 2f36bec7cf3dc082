// The chat: the conversation list (every page of it, unread counts, live), and one
// conversation's view with history paging (older pages on demand), gap fill after reconnects
// (`sync`), live messages, pending sends until `stored`, read receipts, typing, presence and
// recall.

import { client, describe, ok, type Schemas } from "./api";
import { announce, h, replace, when } from "./dom";
import * as people from "./people";
import { newClientId, type ChatMessage, type Realtime } from "./realtime";
import * as session from "./session";

type Conversation = Schemas["Conversation"];

interface Thread {
  messages: Map<number, ChatMessage>;
  /** Oldest seq loaded; older pages are fetched before it. */
  oldest: number;
  hasOlder: boolean;
  loaded: boolean;
  /** Highest seq the other member has read (private conversations). */
  peerRead: number;
  typingUntil: Map<string, number>;
}

const PAGE = 30;
const TYPING_SHOWN_MS = 4000;
/** Conversations asked for per page of the list (the most the API gives). */
const LIST_LIMIT = 200;
/**
 * Pages of the list read one after another without asking: all of it for anyone but an
 * extreme account (5000 conversations, or about 375 when every last message is 16 KiB and a
 * page holds only 15), so that no (re)load floods the mesh; "Load more conversations" then
 * goes on.
 */
const LIST_PAGES = 25;
/** How far before a message for an unlisted conversation the list is read again (clock skew). */
const SINCE_MARGIN_MS = 60_000;

export class Chat {
  private conversations = new Map<string, Conversation>();
  private threads = new Map<string, Thread>();
  private openId: string | null = null;
  private listEl = h("ul", { class: "conversations", "aria-label": "Conversations" });
  private paneEl = h("section", { class: "thread", "aria-label": "Conversation" });
  private typingSentAt = 0;
  /** Where the list goes on when `LIST_PAGES` stopped it; null when all of it is loaded. */
  private listCursor: string | null = null;
  /** The (re)load of the whole list under way, and whether another was asked for meanwhile. */
  private listRun: Promise<void> | null = null;
  private listAgain = false;
  /** Bumped on sign-out: pages of the list read before it are dropped. */
  private epoch = 0;
  /** Conversations being looked for after a message for one not in the list. */
  private finding = new Set<string>();

  constructor(private readonly rt: Realtime) {
    rt.on("ready", () => void this.catchUp());
    rt.on("message", (m) => this.receive(m));
    rt.on("sync", (f) => {
      for (const m of f.messages) this.receive(m);
      const thread = this.threads.get(f.conversation_id);
      if (f.has_more && thread) this.rt.sync(f.conversation_id, maxSeq(thread));
    });
    rt.on("ack", (ack) => {
      if (ack.status === "rejected") announce(`Message not sent: ${ack.reason ?? "rejected"}`);
      this.render();
    });
    rt.on("read", (f) => {
      const thread = this.threads.get(f.conversation_id);
      if (thread && f.user_id !== session.current()?.userId) {
        thread.peerRead = Math.max(thread.peerRead, f.read_seq);
        this.renderThread();
      }
    });
    rt.on("typing", (f) => {
      const thread = this.thread(f.conversation_id);
      if (f.user_id === session.current()?.userId) return;
      thread.typingUntil.set(f.user_id, Date.now() + TYPING_SHOWN_MS);
      this.renderThread();
      window.setTimeout(() => this.renderThread(), TYPING_SHOWN_MS + 50);
    });
    rt.on("presence", (p) => {
      people.setOnline(p.user_id, p.online);
      this.render();
    });
    rt.on("recall", (f) => {
      const m = this.threads.get(f.conversation_id)?.messages.get(f.seq);
      if (m) m.recalled = true;
      this.renderThread();
    });
  }

  /** Forgets everything of the signed-out user. */
  reset(): void {
    this.conversations.clear();
    this.threads.clear();
    this.openId = null;
    this.listCursor = null;
    this.epoch += 1;
  }

  /** The chat page; `openId` selects a conversation. */
  view(openId: string | null): HTMLElement {
    this.openId = openId;
    void this.loadList().then(() => (openId ? this.open(openId) : undefined));
    this.render();
    return h("div", { class: "chat" }, h("nav", { class: "sidebar", "aria-label": "Chats" }, h("h2", {}, "Chats"), this.listEl), this.paneEl);
  }

  /** Opens (or creates, on first send) the private conversation with a friend. */
  privateWith(userId: string): string {
    const me = session.current()?.userId ?? "";
    const [a, b] = [me, userId].sort();
    return `p:${a}:${b}`;
  }

  private thread(id: string): Thread {
    let t = this.threads.get(id);
    if (!t) {
      t = { messages: new Map(), oldest: Infinity, hasOlder: true, loaded: false, peerRead: 0, typingUntil: new Map() };
      this.threads.set(id, t);
    }
    return t;
  }

  /**
   * (Re)loads the whole list: page after page until `next_cursor` is null (a page stops at
   * 200 conversations or 512 KiB of them, so with large last messages it holds only a few),
   * at most `LIST_PAGES` pages. Calls while one runs share it, and it runs once more after.
   */
  private loadList(): Promise<void> {
    if (this.listRun) {
      this.listAgain = true;
      return this.listRun;
    }
    const run = async () => {
      try {
        do {
          this.listAgain = false;
          try {
            this.listCursor = await this.readList({});
          } catch (err) {
            announce(describe(err));
          }
        } while (this.listAgain);
      } finally {
        this.listRun = null;
      }
    };
    this.listRun = run();
    return this.listRun;
  }

  /** Goes on with the list where `LIST_PAGES` stopped it ("Load more conversations"). */
  private async loadMore(): Promise<void> {
    const from = this.listCursor;
    if (!from) return;
    this.listCursor = null;
    try {
      this.listCursor = await this.readList({ cursor: from });
    } catch (err) {
      this.listCursor = from;
      announce(describe(err));
    }
    this.render();
  }

  /**
   * A message for a conversation not in the list: a new one, or one beyond the pages loaded
   * (pinned conversations come first, so a new one need not be on the first page). Reads the
   * conversations changed since shortly before the message, and the whole list if that did
   * not find it.
   */
  private async findConversation(m: ChatMessage): Promise<void> {
    const id = m.conversation_id;
    if (this.finding.has(id)) return;
    this.finding.add(id);
    try {
      const sent = Date.parse(m.sent_at);
      const since = new Date((Number.isFinite(sent) ? sent : Date.now()) - SINCE_MARGIN_MS).toISOString();
      await this.readList({ since });
      if (!this.conversations.has(id)) await this.loadList();
    } catch (err) {
      announce(describe(err));
    } finally {
      this.finding.delete(id);
    }
  }

  /**
   * Reads up to `pages` pages of the list from `query` (a cursor, or `since`), merging and
   * showing each as it comes. Answers the cursor where it stopped, or null at the list's end.
   */
  private async readList(query: { cursor?: string; since?: string }, pages = LIST_PAGES): Promise<string | null> {
    const epoch = this.epoch;
    let cursor = query.cursor;
    for (let read = 0; read < pages; read++) {
      const page = await ok(client.GET("/v1/conversations", { params: { query: { limit: LIST_LIMIT, cursor, since: query.since } } }));
      if (epoch !== this.epoch) return null;
      this.merge(page.items);
      this.render();
      const peers = page.items.map((c) => c.peer_id).filter((id): id is string => !!id);
      await people.learn(peers);
      if (peers.length) await people.loadPresence(peers);
      if (epoch !== this.epoch) return null;
      this.render();
      if (!page.next_cursor) return null;
      cursor = page.next_cursor;
    }
    return cursor ?? null;
  }

  /** Takes a page's conversations, unless a live message already made one newer here. */
  private merge(items: Conversation[]): void {
    for (const c of items) {
      const known = this.conversations.get(c.id);
      if (known && known.last_seq > c.last_seq) continue;
      const thread = this.threads.get(c.id);
      const live = thread ? maxSeq(thread) : 0;
      if (thread && live > c.last_seq) {
        c.last_seq = live;
        c.last_message = thread.messages.get(live) ?? c.last_message;
        c.unread = Math.max(0, c.last_seq - c.read_seq);
      }
      this.conversations.set(c.id, c);
    }
  }

  /** After a (re)connect: refresh the list and fill every loaded thread's gap. */
  private async catchUp(): Promise<void> {
    await this.loadList();
    for (const [id, thread] of this.threads) {
      if (!thread.loaded) continue;
      if (!this.rt.sync(id, maxSeq(thread))) await this.fillGapOverRest(id, thread);
    }
  }

  private async fillGapOverRest(id: string, thread: Thread): Promise<void> {
    for (;;) {
      const page = await ok(
        client.GET("/v1/conversations/{conversation_id}/messages", {
          params: { path: { conversation_id: id }, query: { after_seq: maxSeq(thread), limit: 100 } },
        }),
      );
      for (const m of page.items) this.receive(m);
      if (!page.has_more || page.items.length === 0) return;
    }
  }

  private async open(id: string): Promise<void> {
    const thread = this.thread(id);
    if (!thread.loaded) await this.loadOlder(id);
    this.markRead(id);
    this.renderThread();
    document.getElementById("composer")?.focus();
  }

  private async loadOlder(id: string): Promise<void> {
    const thread = this.thread(id);
    try {
      const query = Number.isFinite(thread.oldest) ? { before_seq: thread.oldest, limit: PAGE } : { limit: PAGE };
      const page = await ok(
        client.GET("/v1/conversations/{conversation_id}/messages", {
          params: { path: { conversation_id: id }, query },
        }),
      );
      for (const m of page.items) {
        thread.messages.set(m.seq, m);
        thread.oldest = Math.min(thread.oldest, m.seq);
      }
      thread.hasOlder = page.has_more;
      thread.loaded = true;
      await people.learn(page.items.map((m) => m.sender_id));
    } catch (err) {
      thread.loaded = true;
      thread.hasOlder = false;
      announce(describe(err));
    }
    this.renderThread();
  }

  private receive(m: ChatMessage): void {
    const thread = this.thread(m.conversation_id);
    const isNew = !thread.messages.has(m.seq);
    thread.messages.set(m.seq, m);
    if (!thread.loaded) thread.oldest = Math.min(thread.oldest, m.seq);
    const conv = this.conversations.get(m.conversation_id);
    const mine = m.sender_id === session.current()?.userId;
    if (conv) {
      if (m.seq > conv.last_seq) {
        conv.last_seq = m.seq;
        conv.last_message = m;
        if (mine) conv.read_seq = m.seq;
      }
      conv.unread = Math.max(0, conv.last_seq - conv.read_seq);
    } else {
      void this.findConversation(m);
    }
    void people.learn([m.sender_id]).then(() => this.render());
    if (isNew && this.openId === m.conversation_id && !mine) this.markRead(m.conversation_id);
    this.render();
  }

  private markRead(id: string): void {
    const conv = this.conversations.get(id);
    const thread = this.threads.get(id);
    const seq = Math.max(conv?.last_seq ?? 0, thread ? maxSeq(thread) : 0);
    if (seq <= 0 || (conv && conv.read_seq >= seq)) return;
    this.rt.read(id, seq);
    if (conv) {
      conv.read_seq = seq;
      conv.unread = 0;
    }
  }

  private async recall(convId: string, m: ChatMessage): Promise<void> {
    try {
      await ok(
        client.POST("/v1/conversations/{conversation_id}/messages/{message_id}/recall", {
          params: { path: { conversation_id: convId, message_id: m.id } },
        }),
      );
      m.recalled = true;
      announce("Message recalled");
    } catch (err) {
      announce(describe(err));
    }
    this.renderThread();
  }

  private title(id: string): string {
    const conv = this.conversations.get(id);
    if (conv?.peer_id) return people.nameOf(conv.peer_id);
    if (id.startsWith("p:")) {
      const me = session.current()?.userId;
      return people.nameOf(id.split(":").slice(1).find((u) => u !== me));
    }
    return `Group ${conv?.group_id?.slice(0, 8) ?? id.slice(2, 10)}`;
  }

  private render(): void {
    const sorted = [...this.conversations.values()].sort((a, b) => b.last_seq - a.last_seq || b.updated_at.localeCompare(a.updated_at));
    replace(
      this.listEl,
      sorted.length === 0 && !this.listCursor ? h("li", { class: "empty" }, "No conversations yet: message a friend from Friends.") : null,
      sorted.map((c) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: `#/chats/${encodeURIComponent(c.id)}`, "aria-current": c.id === this.openId ? "page" : null },
            h("span", { class: "name" }, c.peer_id ? presenceDot(c.peer_id) : null, this.title(c.id)),
            c.unread > 0 ? h("span", { class: "badge", "aria-label": `${c.unread} unread` }, c.unread) : null,
            h("span", { class: "preview" }, c.last_message ? preview(c.last_message) : ""),
          ),
        ),
      ),
      this.listCursor ? h("li", { class: "more" }, h("button", { type: "button", class: "secondary", onclick: () => void this.loadMore() }, "Load more conversations")) : null,
    );
    this.renderThread();
  }

  private renderThread(): void {
    const id = this.openId;
    if (!id) {
      replace(this.paneEl, h("p", { class: "empty" }, "Choose a conversation."));
      return;
    }
    const thread = this.thread(id);
    const me = session.current()?.userId;
    const messages = [...thread.messages.values()].sort((a, b) => a.seq - b.seq);
    const storedIds = new Set(messages.map((m) => m.client_id));
    const pending = this.rt.unconfirmed().filter((p) => (p.conversation_id ?? "") === id && !storedIds.has(p.client_id));
    const typing = [...thread.typingUntil].filter(([, until]) => until > Date.now()).map(([u]) => people.nameOf(u));
    const peer = this.conversations.get(id)?.peer_id;
    const log = h(
      "ol",
      { class: "messages", role: "log", "aria-label": "Messages", "aria-live": "polite" },
      thread.hasOlder && thread.loaded
        ? h("li", { class: "older" }, h("button", { type: "button", onclick: () => void this.loadOlder(id) }, "Load older messages"))
        : null,
      messages.map((m) => messageItem(m, m.sender_id === me, thread.peerRead, () => void this.recall(id, m))),
      pending.map((p) => h("li", { class: "message mine pending" }, h("p", { class: "body" }, p.body), h("span", { class: "meta" }, "sending…"))),
    );
    const input = h("input", {
      id: "composer",
      name: "body",
      autocomplete: "off",
      required: true,
      maxlength: 4000,
      "aria-label": "Message",
      placeholder: "Write a message",
      oninput: () => {
        if (Date.now() - this.typingSentAt > 2000) {
          this.typingSentAt = Date.now();
          this.rt.typing(id);
        }
      },
    });
    const form = h(
      "form",
      {
        class: "composer",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const body = input.value.trim();
          if (!body) return;
          this.rt.send({ client_id: newClientId(), conversation_id: id, to: null, body, kind: "text" });
          input.value = "";
          this.renderThread();
        },
      },
      input,
      h("button", { type: "submit" }, "Send"),
    );
    const hadFocus = document.activeElement?.id === "composer";
    const draft = (document.getElementById("composer") as HTMLInputElement | null)?.value ?? "";
    replace(
      this.paneEl,
      h("h2", {}, peer ? presenceDot(peer) : null, this.title(id), peer ? h("span", { class: "presence-text" }, people.isOnline(peer) ? " online" : " offline") : null),
      log,
      h("p", { class: "typing", "aria-live": "polite" }, typing.length ? `${typing.join(", ")} typing…` : ""),
      form,
    );
    input.value = draft;
    if (hadFocus) input.focus();
    log.scrollTop = log.scrollHeight;
  }
}

function maxSeq(thread: Thread): number {
  let max = 0;
  for (const seq of thread.messages.keys()) max = Math.max(max, seq);
  return max;
}

function preview(m: ChatMessage): string {
  if (m.recalled) return "(recalled)";
  return `${people.nameOf(m.sender_id)}: ${m.body}`.slice(0, 80);
}

function presenceDot(userId: string): HTMLElement {
  const on = people.isOnline(userId);
  return h("span", { class: on ? "dot on" : "dot", role: "img", "aria-label": on ? "online" : "offline" });
}

function messageItem(m: ChatMessage, mine: boolean, peerRead: number, recall: () => void): HTMLElement {
  return h(
    "li",
    { class: mine ? "message mine" : "message", "data-seq": m.seq },
    mine ? null : h("span", { class: "sender" }, people.nameOf(m.sender_id)),
    h("p", { class: "body" }, m.recalled ? h("em", {}, "This message was recalled") : m.body),
    h(
      "span",
      { class: "meta" },
      h("time", { datetime: m.sent_at }, when(m.sent_at)),
      mine ? (m.seq <= peerRead ? " · read" : " · sent") : null,
      mine && !m.recalled ? h("button", { type: "button", class: "link", onclick: recall, "aria-label": `Recall message ${m.seq}` }, "recall") : null,
    ),
  );
}
