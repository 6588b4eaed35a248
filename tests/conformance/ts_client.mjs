// The official TypeScript MCP clients over Streamable HTTP: connect, list the tools, call the
// read-only `change.list`, and print what the server answered as one JSON line on stdout.
//
//   node ts_client.mjs <url> <client>
//     sdk-v1            @modelcontextprotocol/sdk 1.x: the initialize handshake (2025-11-25)
//     client-v2-legacy  @modelcontextprotocol/client 2.x, its default ('legacy') negotiation:
//                       the initialize handshake
//     client-v2-modern  @modelcontextprotocol/client 2.x pinned to 2026-07-28: server/discover,
//                       then stateless requests carrying the revision in _meta
//
// An https URL is verified against NODE_EXTRA_CA_CERTS. Exit 0 with the JSON line, or 1 with the
// error on stderr (tests/python/test_ts_client.py asserts on both).

const [url, which] = process.argv.slice(2);
if (!url || !which) {
  console.error('usage: node ts_client.mjs <url> sdk-v1|client-v2-legacy|client-v2-modern');
  process.exit(2);
}

async function connect() {
  const info = { name: 'mcp-gateway-ts-smoke', version: '1.0.0' };
  if (which === 'sdk-v1') {
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
    const { StreamableHTTPClientTransport } = await import(
      '@modelcontextprotocol/sdk/client/streamableHttp.js'
    );
    const client = new Client(info);
    const transport = new StreamableHTTPClientTransport(new URL(url));
    await client.connect(transport);
    // 1.x has no era: it always runs the initialize handshake, and keeps the agreed revision
    // on the transport (sent as MCP-Protocol-Version).
    return { client, version: transport.protocolVersion, era: 'legacy' };
  }
  const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
  let options;
  if (which === 'client-v2-modern') {
    options = { versionNegotiation: { mode: { pin: '2026-07-28' } } };
  } else if (which !== 'client-v2-legacy') {
    throw new Error(`unknown client ${which}`);
  }
  const client = new Client(info, options);
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return {
    client,
    version: client.getNegotiatedProtocolVersion(),
    era: client.getProtocolEra(),
  };
}

try {
  const { client, version, era } = await connect();
  const server = client.getServerVersion?.();
  const tools = await client.listTools();
  const call = await client.callTool({ name: 'change.list', arguments: {} });
  await client.close();
  console.log(
    JSON.stringify({
      client: which,
      era,
      protocolVersion: version,
      serverName: server?.name,
      tools: tools.tools.map((t) => t.name),
      isError: call.isError ?? false,
      structuredContent: call.structuredContent,
      text: call.content?.[0]?.text,
    }),
  );
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.exit(1);
}
