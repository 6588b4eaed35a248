// The official TypeScript MCP client 2.x (@modelcontextprotocol/client) against the gateway's
// MCP edge (callers, grants, per-tool limits, JWTs): runs the sessions of a JSON spec and prints
// what happened as one JSON line on stdout, failures included, for
// tests/python/test_ts_client_edge.py to assert on.
//
//   node ts_client_edge.mjs '<spec>'      (or the spec on stdin)
//
//   spec = { "url": "https://127.0.0.1:8443/mcp",
//            "sessions": [ { "era": "legacy" | "modern",   // initialize at 2025-11-25, or
//                                                          // pinned to 2026-07-28 (server/discover)
//                            "token": "..." | null,        // the bearer token (an AuthProvider)
//                            "steps": [ { "op": "listTools" },
//                                       { "op": "callTool", "name": "...", "arguments": {} } ] } ] }
//
//   out  = { "sessions": [ { "connect": {ok, era, protocolVersion, serverName} | {ok: false, error},
//                            "steps": [ {ok: true, tools} | {ok: true, isError, structuredContent}
//                                     | {ok: false, error} ] } ] }
//
// An error is {name, code, status, message, unauthorized, protocolError, jsonrpc}: `jsonrpc` is
// the JSON-RPC error the HTTP body carried, when it carried one. A session stops at its first
// failed connect. Exit 0 with the JSON line; 2 for a bad spec. An https URL is verified against
// NODE_EXTRA_CA_CERTS.

import { readFileSync } from 'node:fs';
import {
  Client,
  ProtocolError,
  SdkError,
  StreamableHTTPClientTransport,
  UnauthorizedError,
} from '@modelcontextprotocol/client';

let spec;
try {
  spec = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
  if (!spec.url || !Array.isArray(spec.sessions)) throw new Error('needs url and sessions');
} catch (e) {
  console.error(`usage: node ts_client_edge.mjs '<spec json>' (${e.message})`);
  process.exit(2);
}

function describe(e) {
  const out = {
    name: e?.name ?? typeof e,
    // SdkError: a string code (e.g. CLIENT_HTTP_NOT_IMPLEMENTED); ProtocolError: the JSON-RPC
    // code the server answered with.
    code: e?.code ?? null,
    status: e?.status ?? e?.data?.status ?? null,
    message: e?.message ?? String(e),
    unauthorized: e instanceof UnauthorizedError,
    protocolError: e instanceof ProtocolError,
    sdkError: e instanceof SdkError,
    jsonrpc: null,
  };
  if (out.protocolError) out.jsonrpc = { code: e.code, message: e.message, data: e.data ?? null };
  // A non-2xx answer other than 401 (and a modern-era 400) is an SdkHttpError whose data.text is
  // the body: the JSON-RPC error the gateway wrote is only there.
  const text = e?.data?.text;
  if (!out.jsonrpc && typeof text === 'string') {
    try {
      const body = JSON.parse(text);
      if (body?.error) out.jsonrpc = { id: body.id ?? null, ...body.error };
    } catch {}
  }
  // InsufficientScopeError (a 403 with a Bearer error="insufficient_scope" challenge): the
  // challenge's parameters, never the body.
  for (const k of ['requiredScope', 'resourceMetadataUrl', 'errorDescription']) {
    if (e?.[k] !== undefined) out[k] = e[k];
  }
  if (e?.cause && e.cause !== e) out.cause = describe(e.cause);
  return out;
}

async function runSession({ era, token, steps = [] }) {
  const options =
    era === 'modern'
      ? { versionNegotiation: { mode: { pin: '2026-07-28' } } }
      : era === 'legacy'
        ? undefined
        : (() => {
            throw new Error(`unknown era ${era}`);
          })();
  const client = new Client({ name: 'mcp-gateway-ts-edge', version: '1.0.0' }, options);
  const transport = new StreamableHTTPClientTransport(new URL(spec.url), {
    authProvider: token ? { token: async () => token } : undefined,
  });
  const result = { connect: null, steps: [] };
  try {
    await client.connect(transport);
    result.connect = {
      ok: true,
      era: client.getProtocolEra(),
      protocolVersion: client.getNegotiatedProtocolVersion(),
      serverName: client.getServerVersion?.()?.name ?? null,
    };
  } catch (e) {
    result.connect = { ok: false, error: describe(e) };
    await client.close().catch(() => {});
    return result;
  }
  for (const step of steps) {
    try {
      if (step.op === 'listTools') {
        const listed = await client.listTools();
        result.steps.push({ op: step.op, ok: true, tools: listed.tools.map((t) => t.name) });
      } else if (step.op === 'callTool') {
        const call = await client.callTool({ name: step.name, arguments: step.arguments ?? {} });
        result.steps.push({
          op: step.op,
          name: step.name,
          ok: true,
          isError: call.isError ?? false,
          structuredContent: call.structuredContent ?? null,
        });
      } else {
        throw new Error(`unknown op ${step.op}`);
      }
    } catch (e) {
      result.steps.push({ op: step.op, name: step.name, ok: false, error: describe(e) });
    }
  }
  await client.close().catch(() => {});
  return result;
}

const sessions = [];
for (const session of spec.sessions) sessions.push(await runSession(session));
console.log(JSON.stringify({ sessions }));
