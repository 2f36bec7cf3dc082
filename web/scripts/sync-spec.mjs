// Keeps spec/ equal to what a running edge publishes: `node scripts/sync-spec.mjs check BASE`
// fails when /openapi.json or /asyncapi.json of the edge at BASE differ from the checked-in
// copies; `write BASE` refreshes them. Documents are compared with sorted keys and without
// `servers` (the edge's own URL).
import { readFile, writeFile } from "node:fs/promises";

const [mode, base] = process.argv.slice(2);
if (!["check", "write"].includes(mode) || !base) {
  console.error("usage: sync-spec.mjs check|write http://HOST:PORT");
  process.exit(2);
}

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .filter((key) => key !== "servers")
      .map((key) => [key, canonical(value[key])]),
  );
}

let stale = 0;
for (const name of ["openapi", "asyncapi"]) {
  const res = await fetch(`${base}/${name}.json`);
  if (!res.ok) throw new Error(`${name}.json: HTTP ${res.status}`);
  const live = JSON.stringify(canonical(await res.json()), null, 1) + "\n";
  const file = new URL(`../spec/${name}.json`, import.meta.url);
  const kept = await readFile(file, "utf8").catch(() => "");
  if (live === kept) continue;
  if (mode === "write") {
    await writeFile(file, live);
    console.error(`web/spec/${name}.json refreshed`);
  } else {
    console.error(`web/spec/${name}.json differs from the edge's /${name}.json`);
    stale += 1;
  }
}
if (stale > 0) {
  console.error("refresh it with scripts/web-build.sh --refresh-spec (then rebuild and commit)");
  process.exit(1);
}
