// A client written against the types openapi-typescript generates from key_service's OpenAPI
// document (./api.d.ts, made by the test). It must type-check under `tsc --strict`: the
// document's schemas must describe what a TypeScript user handles, with no cast.
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Key = components["schemas"]["Key"];

export async function tour(baseUrl: string, csrf: string): Promise<string[]> {
  const api = createClient<paths>({ baseUrl, credentials: "include" });
  const seen: string[] = [];

  const login = await api.POST("/api/v1/session", {
    body: { username: "admin", password: "secret" },
  });
  if (login.data) seen.push(login.data.csrf_token);

  const issued = await api.POST("/api/v1/keys", {
    body: { name: "typed" },
    headers: { "X-CSRF-Token": csrf },
  });
  if (issued.error) seen.push(issued.error.detail);
  if (!issued.data) return seen;
  const secret: string = issued.data.secret;
  const id: string = issued.data.key_id;
  seen.push(secret.slice(0, 0), id);

  const page = await api.GET("/api/v1/keys", { params: { query: { limit: 10 } } });
  for (const key of page.data?.items ?? []) {
    seen.push(describe(key));
  }
  const next: string | null | undefined = page.data?.next_cursor;
  if (next) await api.GET("/api/v1/keys", { params: { query: { cursor: next } } });
  const found = await api.GET("/api/v1/keys", { params: { query: { q: "billing", limit: 20 } } });
  for (const key of found.data?.items ?? []) {
    seen.push(describe(key));
  }

  const one = await api.GET("/api/v1/keys/{key_id}", { params: { path: { key_id: id } } });
  if (one.data) seen.push(describe(one.data));

  const usage = await api.GET("/api/v1/keys/{key_id}/usage", { params: { path: { key_id: id } } });
  for (const day of usage.data?.days ?? []) seen.push(`${day.day} ${day.requests}`);
  const kept: number | undefined = usage.data?.retention_days;
  seen.push(String(kept));

  const revoked = await api.POST("/api/v1/keys/{key_id}/revoke", {
    params: { path: { key_id: id } },
    headers: { "X-CSRF-Token": csrf },
  });
  if (revoked.data?.revoked_at) seen.push(new Date(revoked.data.revoked_at).toISOString());
  if (revoked.error) seen.push(revoked.error.title);

  const audit = await api.GET("/api/v1/audit", {});
  for (const row of audit.data?.items ?? []) seen.push(`${row.actor} ${row.action} ${row.key_id}`);

  const rolled = await api.POST("/api/v1/keys/{key_id}/roll", {
    params: { path: { key_id: id } },
    body: { overlap_seconds: 3600 },
    headers: { "X-CSRF-Token": csrf },
  });
  if (rolled.data) {
    const revokesAt: string | null = rolled.data.replaced_key.revokes_at;
    seen.push(rolled.data.secret.slice(0, 0), rolled.data.replaces ?? "", revokesAt ?? "");
  }

  const token = await api.POST("/api/v1/tokens", {
    body: { name: "subscriber", scopes: ["events:read"] },
    headers: { "X-CSRF-Token": csrf },
  });
  if (token.data) {
    const text: string = token.data.token;
    seen.push(text.slice(0, 5));
    await api.POST("/api/v1/tokens/{token_id}/revoke", {
      params: { path: { token_id: token.data.token_id } },
      headers: { "X-CSRF-Token": csrf },
    });
  }
  const tokens = await api.GET("/api/v1/tokens", { params: { query: { limit: 5 } } });
  for (const t of tokens.data?.items ?? []) seen.push(`${t.name} ${t.scopes.join(",")}`);

  const feed = await api.GET("/api/v1/events", { params: { query: { after: "0", limit: 100 } } });
  for (const entry of feed.data?.events ?? []) seen.push(entry.signing_key, entry.body);
  const last: number | undefined = feed.data?.last_sequence;
  seen.push(String(last));

  const keys = await api.GET("/api/v1/verify-keys", {});
  for (const key of keys.data?.keys ?? []) seen.push(`${key.fingerprint} ${key.current}`);

  await api.DELETE("/api/v1/session", { headers: { "X-CSRF-Token": csrf } });
  return seen;
}

function describe(key: Key): string {
  const revoked: string = key.revoked_at === null ? "Active" : new Date(key.revoked_at).toISOString();
  const used: string = key.last_used_at === null ? "Never" : new Date(key.last_used_at).toISOString();
  return `${key.name} ${key.status} ${revoked} ${used}`;
}
