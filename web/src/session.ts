// The signed-in session: tokens live only in memory (a reload signs out), and the access token
// is refreshed before it expires (at 80% of its life, or at once when an answer says
// `X-Token-Refresh-Required`; a throttled or failed refresh is tried again shortly). Losing
// the session (refresh refused, session revoked, account disabled) tells every listener why.

import { client, type Schemas } from "./api";

export interface Tokens {
  userId: string;
  sessionId: string;
  access: string;
  refresh: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  /** When these tokens arrived, in milliseconds since the epoch. */
  issuedAt: number;
}

type EndListener = (reason: string) => void;
type TokenListener = (access: string) => void;

let tokens: Tokens | null = null;
let timer: number | undefined;
let refreshing: Promise<boolean> | null = null;
const endListeners: EndListener[] = [];
const tokenListeners: TokenListener[] = [];

export function current(): Tokens | null {
  return tokens;
}

export function onEnd(listener: EndListener): void {
  endListeners.push(listener);
}

/** Called with each new access token (the realtime connection re-authenticates with it). */
export function onToken(listener: TokenListener): void {
  tokenListeners.push(listener);
}

export function start(pair: Schemas["TokenPair"] | Schemas["Registered"]): void {
  tokens = {
    userId: pair.user_id,
    sessionId: pair.session_id,
    access: pair.access_token,
    refresh: pair.refresh_token,
    expiresAt: Date.now() + pair.expires_in * 1000,
    issuedAt: Date.now(),
  };
  schedule(pair.expires_in);
  for (const l of tokenListeners) l(tokens.access);
}

function schedule(expiresIn: number): void {
  retryIn(Math.max(1, expiresIn * 0.8));
}

function retryIn(seconds: number): void {
  window.clearTimeout(timer);
  timer = window.setTimeout(() => void refreshNow(), seconds * 1000);
}

/**
 * The edge says the token `access` is about to expire: refresh, unless these tokens are
 * already newer or younger than half their life (a hint longer than the tokens' lifetime must
 * not make every answer a refresh).
 */
export function refreshHinted(access: string): void {
  if (!tokens || tokens.access !== access) return;
  if (Date.now() - tokens.issuedAt < (tokens.expiresAt - tokens.issuedAt) / 2) return;
  void refreshNow();
}

/** Rotates the tokens once (concurrent callers share the attempt); false ends the session. */
export function refreshNow(): Promise<boolean> {
  if (!tokens) return Promise.resolve(false);
  refreshing ??= (async () => {
    const refresh = tokens?.refresh;
    try {
      if (!refresh) return false;
      const { data, response } = await client.POST("/v1/auth/refresh", {
        body: { refresh_token: refresh },
      });
      if (response.status === 409) return true; // a concurrent refresh of ours won the race
      if (data) {
        start(data);
        return true;
      }
      if (response.status === 429 || response.status >= 500) {
        // Throttled or the mesh is busy: the session is fine, try again shortly.
        const retryAfter = Number(response.headers.get("retry-after"));
        retryIn(Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 2);
        return true;
      }
      end("Your session ended. Please sign in again.");
      return false;
    } catch {
      return true; // offline: try again on the next answer or timer
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Forgets the tokens and tells every listener why. */
export function end(reason: string): void {
  if (!tokens) return;
  tokens = null;
  window.clearTimeout(timer);
  for (const l of endListeners) l(reason);
}
