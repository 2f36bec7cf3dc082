// The realtime connection, as the README's client contract asks: a WebSocket to /v1/ws
// (token in the `bearer, <token>` subprotocol, refreshed with an `auth` frame), falling back to
// the SSE stream /v1/events (sends then go over REST) when WebSockets cannot be opened;
// reconnects with backoff, and every message stays queued and is resent with the same
// `client_id` until an `ack` says `stored` or `rejected`. Frame shapes come from the AsyncAPI
// document (src/gen/frames.ts, generated).

import type { components } from "./gen/frames";
import { client } from "./api";
import * as session from "./session";

type Frames = components["schemas"];
export type ServerFrame = Frames["ServerFrame"];
export type ClientFrame = Frames["ClientFrame"];
export type ChatMessage = Frames["ChatMessage"];
export type Outgoing = Frames["SendMessage"];
type FrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;
type Listener<T extends ServerFrame["type"]> = (frame: FrameOf<T>) => void;

/** How often unconfirmed messages are sent again while connected. */
const RESEND_EVERY_MS = 3000;
/** Refusals for now, not for the message: it stays queued and is sent again (in order). */
const TRANSIENT = new Set(["service_unavailable", "overloaded", "timeout"]);
/** WebSocket attempts that never opened before the SSE stream is used instead. */
const WS_FAILURES_BEFORE_SSE = 2;
/** Close codes after which reconnecting cannot help: the session is over. */
const SESSION_OVER: Record<number, string> = {
  4001: "This session was revoked (signed out from another device, or the account was disabled).",
  4401: "Your session ended. Please sign in again.",
  4403: "Your session ended. Please sign in again.",
};

export type Transport = "websocket" | "sse" | "offline";

export class Realtime {
  private ws: WebSocket | null = null;
  private sse: EventSource | null = null;
  private listeners = new Map<string, ((frame: ServerFrame) => void)[]>();
  private pending = new Map<string, Outgoing>();
  private wsFailures = 0;
  private backoffMs = 250;
  private stopped = false;
  private resendTimer: number | undefined;
  private reconnectTimer: number | undefined;
  transport: Transport = "offline";
  onTransport: (t: Transport) => void = () => {};

  constructor(private readonly forceSse = false) {
    session.onToken((token) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.raw({ type: "auth", token });
      else if (this.sse) this.reconnect(0); // an EventSource keeps its URL's token
    });
  }

  on<T extends ServerFrame["type"]>(type: T, listener: Listener<T>): void {
    const list = this.listeners.get(type) ?? [];
    list.push(listener as (frame: ServerFrame) => void);
    this.listeners.set(type, list);
  }

  start(): void {
    this.stopped = false;
    this.connect();
    this.resendTimer = window.setInterval(() => this.resendPending(), RESEND_EVERY_MS);
  }

  stop(): void {
    this.stopped = true;
    window.clearInterval(this.resendTimer);
    window.clearTimeout(this.reconnectTimer);
    this.pending.clear();
    this.ws?.close(1000);
    this.sse?.close();
    this.ws = null;
    this.sse = null;
    this.setTransport("offline");
  }

  /** Queues a message until the server confirms it stored (or refused) it. */
  send(message: Outgoing): void {
    this.pending.set(message.client_id, message);
    void this.transmit(message);
  }

  unconfirmed(): Outgoing[] {
    return [...this.pending.values()];
  }

  read(conversationId: string, seq: number): void {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.raw({ type: "read", conversation_id: conversationId, seq });
    } else {
      void client.POST("/v1/conversations/{conversation_id}/read", {
        params: { path: { conversation_id: conversationId } },
        body: { seq },
      });
    }
  }

  typing(conversationId: string): void {
    // Typing is a WebSocket frame only; over SSE it is not sent.
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.raw({ type: "typing", conversation_id: conversationId });
    }
  }

  /** Asks for messages after `afterSeq` (a gap); they arrive as a `sync` frame. */
  sync(conversationId: string, afterSeq: number): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.raw({ type: "sync", conversation_id: conversationId, after_seq: afterSeq, limit: 100 });
    return true;
  }

  private raw(frame: ClientFrame): void {
    this.ws?.send(JSON.stringify(frame));
  }

  private async transmit(message: Outgoing): Promise<void> {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.raw({ type: "send", ...message });
    } else if (this.sse && this.transport === "sse") {
      const { data } = await client.POST("/v1/messages", { body: message });
      if (data) this.dispatch({ type: "ack", ...data });
    }
  }

  private resendPending(): void {
    for (const message of this.pending.values()) void this.transmit(message);
  }

  private connect(): void {
    const tokens = session.current();
    if (!tokens || this.stopped) return;
    if (this.forceSse || this.wsFailures >= WS_FAILURES_BEFORE_SSE || !("WebSocket" in window)) {
      this.connectSse(tokens.access);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ws`, ["bearer", tokens.access]);
    let opened = false;
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.wsFailures = 0;
      this.backoffMs = 250;
      this.setTransport("websocket");
    };
    ws.onmessage = (event) => this.receive(event.data as string);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setTransport("offline");
      if (!opened) this.wsFailures += 1;
      const over = SESSION_OVER[event.code];
      if (over) {
        session.end(over);
        return;
      }
      if (event.code === 4002) {
        // The access token expired on the socket: refresh, then reconnect.
        void session.refreshNow().then((alive) => alive && this.reconnect(0));
        return;
      }
      this.reconnect(this.backoffMs);
    };
  }

  private connectSse(token: string): void {
    const sse = new EventSource(`/v1/events?access_token=${encodeURIComponent(token)}`);
    this.sse = sse;
    sse.onopen = () => {
      this.backoffMs = 250;
      this.setTransport("sse");
    };
    sse.onmessage = (event) => this.receive(event.data as string);
    sse.onerror = () => {
      if (this.sse !== sse) return;
      sse.close();
      this.sse = null;
      this.setTransport("offline");
      // A revoked or expired token also lands here: the refresh decides which.
      void session.refreshNow().then((alive) => alive && this.reconnect(this.backoffMs));
    };
  }

  private reconnect(delayMs: number): void {
    if (this.stopped) return;
    this.ws?.close(1000);
    this.sse?.close();
    this.ws = null;
    this.sse = null;
    window.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = window.setTimeout(() => this.connect(), delayMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
  }

  private setTransport(t: Transport): void {
    this.transport = t;
    this.onTransport(t);
  }

  private receive(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    this.dispatch(frame);
  }

  private dispatch(frame: ServerFrame): void {
    if (frame.type === "ack" && frame.status === "rejected" && TRANSIENT.has(frame.reason ?? "")) {
      // The mesh is busy or a backend is down: send everything unconfirmed again, in order,
      // after the wait it asked for; the page is not told (the message is not refused).
      window.setTimeout(() => this.resendPending(), frame.retry_after_ms ?? RESEND_EVERY_MS);
      return;
    }
    if (frame.type === "ack" && (frame.status === "stored" || frame.status === "rejected")) {
      this.pending.delete(frame.client_id);
    }
    if (frame.type === "ready") this.resendPending();
    if (frame.type === "session_revoked") {
      session.end(SESSION_OVER[4001]);
      return;
    }
    for (const listener of this.listeners.get(frame.type) ?? []) listener(frame);
  }
}

/** A fresh client id: random, URL-safe (works outside secure contexts too). */
export function newClientId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "c" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
