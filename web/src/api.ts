// The typed REST client: paths, parameters and bodies come from the OpenAPI document
// (src/gen/api.ts, generated), calls go through openapi-fetch with the access token attached,
// and every problem+json answer becomes an `ApiProblem` carrying its stable `code`.

import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./gen/api";
import * as session from "./session";

export type Schemas = components["schemas"];

export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(detail);
  }
}

const auth: Middleware = {
  onRequest({ request }) {
    const tokens = session.current();
    if (tokens && !request.headers.has("authorization")) {
      request.headers.set("authorization", `Bearer ${tokens.access}`);
    }
    return request;
  },
  onResponse({ request, response }) {
    if (response.headers.get("x-token-refresh-required") === "true") {
      session.refreshHinted(request.headers.get("authorization")?.replace(/^Bearer /, "") ?? "");
    }
    return response;
  },
};

export const client = createClient<paths>({ baseUrl: location.origin });
client.use(auth);

/** The data of an openapi-fetch answer, or throws its problem (a 401 ends the session). */
export async function ok<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  const problem = (error ?? {}) as { code?: string; detail?: string; title?: string };
  if (response.status === 401 && session.current()) {
    session.end("Your session ended. Please sign in again.");
  }
  throw new ApiProblem(
    response.status,
    problem.code ?? "http_" + response.status,
    problem.detail ?? problem.title ?? response.statusText,
  );
}

/** A short message for people: the problem's detail and code. */
export function describe(err: unknown): string {
  if (err instanceof ApiProblem) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

/** One answer of a cursor-paged list (`items`, then `next_cursor` while more follow). */
export interface CursorPage<T> {
  items: T[];
  next_cursor?: string | null;
}

/** How many pages `allPages` reads before it stops and says where the list goes on. */
export const MAX_PAGES = 50;

/**
 * Every item of a cursor-paged list: asks `page` for one page after another, passing each
 * answer's `next_cursor` back, until an answer has none (a page may hold fewer items than
 * asked for: the server also stops a page at a byte budget, so a short page is no end).
 * Stops after `maxPages` pages; `next_cursor` then says where the list goes on (null when
 * every item was read).
 */
export async function allPages<T>(
  page: (cursor: string | undefined) => Promise<CursorPage<T>>,
  maxPages = MAX_PAGES,
): Promise<{ items: T[]; next_cursor: string | null }> {
  const items: T[] = [];
  let cursor: string | undefined;
  for (let read = 0; read < maxPages; read++) {
    const answer = await page(cursor);
    items.push(...answer.items);
    if (!answer.next_cursor) return { items, next_cursor: null };
    cursor = answer.next_cursor;
  }
  return { items, next_cursor: cursor ?? null };
}
