// Who is who: nicknames of the users the console shows (asked of /v1/users in batches of at
// most 100 ids, every page of the answer) and their presence as the realtime stream reports it.

import { allPages, client, ok, type Schemas } from "./api";

const nicknames = new Map<string, string>();
const online = new Map<string, boolean>();

export function nameOf(id: string | null | undefined): string {
  if (!id) return "";
  return nicknames.get(id) ?? id.slice(0, 8);
}

export function remember(user: Schemas["PublicUser"] | Schemas["UserProfile"]): void {
  nicknames.set(user.id, user.nickname);
}

export async function learn(ids: (string | null | undefined)[]): Promise<void> {
  const missing = [...new Set(ids.filter((id): id is string => !!id && !nicknames.has(id)))];
  for (let i = 0; i < missing.length; i += 100) {
    // The answer is paged like any search (20 users unless `limit` says more): read it whole.
    const ids = missing.slice(i, i + 100).join(",");
    const found = await allPages((cursor) => ok(client.GET("/v1/users", { params: { query: { ids, limit: 100, cursor } } })));
    for (const user of found.items) remember(user);
  }
}

export function setOnline(id: string, isOnline: boolean): void {
  online.set(id, isOnline);
}

export function isOnline(id: string): boolean {
  return online.get(id) ?? false;
}

export async function loadPresence(ids: string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 100) {
    const list = await ok(
      client.GET("/v1/presence", { params: { query: { user_ids: ids.slice(i, i + 100).join(",") } } }),
    );
    for (const p of list.items) online.set(p.user_id, p.online);
  }
}
