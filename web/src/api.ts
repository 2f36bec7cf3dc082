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
