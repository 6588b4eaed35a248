//! Every variable the backend reads, as `backend --help` documents it.

/// One documented variable: name, default (as shown by `--help`), meaning.
pub struct VarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "PORT",
        default: "3000",
        help: "TCP port to listen on",
    },
    VarDoc {
        name: "HOST",
        default: "0.0.0.0",
        help: "address to bind (IPv4 or IPv6 literal, or localhost)",
    },
    VarDoc {
        name: "WORKING_DIRECTORY",
        default: ".",
        help: "project root holding openspec/ (or the openspec/ folder itself)",
    },
    VarDoc {
        name: "AUTH_TOKENS",
        default: "(empty: auth off)",
        help: "comma-separated bearer tokens, each `name:token` (the caller is name) or a bare \
               token (the caller is token-<8 hex of its SHA-256>); the todo tools keep each \
               caller's tasks apart; health and metrics stay open",
    },
    VarDoc {
        name: "ALLOWED_ORIGINS",
        default: "(empty: loopback only)",
        help: "comma-separated browser origins (scheme://host[:port]) for CORS and the Origin \
               check; * allows any; empty: loopback origins only (http(s)://localhost, \
               127.0.0.1, [::1], any port); CORS_ORIGINS is read when unset",
    },
    VarDoc {
        name: "ALLOWED_HOSTS",
        default: "(empty: follows HOST)",
        help: "comma-separated Host header values (host or host:port; no port: any port) \
               served, against DNS rebinding; * allows any; empty: loopback names only when \
               HOST is a loopback address, any Host otherwise",
    },
    VarDoc {
        name: "RATE_LIMIT",
        default: "0 (off)",
        help: "requests per minute per token (per client IP when auth is off)",
    },
    VarDoc {
        name: "REDIS_URL",
        default: "(empty: each replica counts alone)",
        help: "redis://[[user]:password@]host[:port][/db]: RATE_LIMIT counted once across all \
               replicas sharing this Redis (one atomic script per check, on Redis's clock)",
    },
    VarDoc {
        name: "ENABLE_DISTRIBUTED_RATE_LIMIT",
        default: "(empty: true when REDIS_URL is set)",
        help: "true/false; true requires REDIS_URL; false keeps per-replica counting even with \
               REDIS_URL set",
    },
    VarDoc {
        name: "REDIS_TIMEOUT_MS",
        default: "200",
        help: "longest wait for Redis per rate-limit check (connect included), then \
               RATE_LIMIT_REDIS_FAILURE applies",
    },
    VarDoc {
        name: "RATE_LIMIT_REDIS_FAILURE",
        default: "open",
        help: "when Redis is down or slow: open lets calls through, closed refuses them \
               (503 UNAVAILABLE, Retry-After: 1); counted in rate_limit_redis_errors_total",
    },
    VarDoc {
        name: "HEARTBEAT_MS",
        default: "25000",
        help: "SSE keep-alive comment interval in milliseconds",
    },
    VarDoc {
        name: "MAX_REQUEST_SIZE_KB",
        default: "1024",
        help: "largest accepted request body (larger: 413 PAYLOAD_TOO_LARGE)",
    },
    VarDoc {
        name: "MAX_RESPONSE_SIZE_KB",
        default: "1024",
        help: "largest tool result (larger: RESPONSE_TOO_LARGE error instead of the result)",
    },
    VarDoc {
        name: "REQUEST_TIMEOUT_MS",
        default: "30000",
        help: "time limit of a writing tool call (change.archive, task.update) and of every \
               todo call: TIMEOUT after it",
    },
    VarDoc {
        name: "SHUTDOWN_GRACE_MS",
        default: "10000",
        help: "on SIGTERM/SIGINT, how long calls and open streams may run before being closed",
    },
    VarDoc {
        name: "LOG_LEVEL",
        default: "info",
        help: "error, warn, info, debug or trace (program log on stderr)",
    },
    VarDoc {
        name: "ACCESS_LOG",
        default: "on",
        help: "on/off: one JSON line per request on stdout",
    },
    VarDoc {
        name: "OAUTH_RESOURCE",
        default: "(empty: no OAuth metadata)",
        help: "this MCP endpoint's URL as clients reach it (https://host/mcp): serves RFC 9728 \
               protected resource metadata and names it in 401 challenges",
    },
    VarDoc {
        name: "OAUTH_AUTHORIZATION_SERVERS",
        default: "(required with OAUTH_RESOURCE)",
        help: "comma-separated issuer URLs of the authorization servers for OAUTH_RESOURCE",
    },
    VarDoc {
        name: "OAUTH_SCOPES",
        default: "(empty)",
        help: "comma-separated scopes listed in the metadata (scopes_supported)",
    },
    VarDoc {
        name: "TOOLS",
        default: "openspec",
        help: "comma-separated tool families to serve: openspec (change.*, task.*, spec.*), \
               todo (list_tasks, create_task, mark_task_completed, update_task, delete_task: \
               per-caller tasks in a database), memory (memory_remember, memory_recall, \
               memory_forget: per-caller memories in the same database); only these appear in \
               tools/list, /tools and /servers",
    },
    VarDoc {
        name: "DATABASE_URL",
        default: "(empty: SQLite at DATABASE_PATH)",
        help: "postgres://user:password@host:port/db[?sslmode=disable|prefer|require]: the todo \
               and memory families' PostgreSQL database (replicas on many hosts; migrated at \
               start-up under an advisory lock)",
    },
    VarDoc {
        name: "DATABASE_POOL_SIZE",
        default: "8",
        help: "PostgreSQL connections each replica keeps at most; a call waits \
               DATABASE_TIMEOUT_MS for a free one",
    },
    VarDoc {
        name: "DATABASE_TIMEOUT_MS",
        default: "2000",
        help: "PostgreSQL: how long connecting, waiting for a pooled connection, or one \
               statement may take before the call answers UNAVAILABLE",
    },
    VarDoc {
        name: "DATABASE_PATH",
        default: "<WORKING_DIRECTORY>/.mcp/store.sqlite3",
        help: "the todo and memory families' SQLite file when DATABASE_URL is empty (WAL \
               mode; shared by replicas on one volume; migrated at start-up; in backups)",
    },
    VarDoc {
        name: "DATABASE_BUSY_TIMEOUT_MS",
        default: "5000",
        help: "SQLite: how long a call waits for another writer's lock on the database, \
               then answers UNAVAILABLE",
    },
    VarDoc {
        name: "TRUSTED_CALLER_HEADER",
        default: "(none)",
        help: "a request header naming the caller, believed from loopback and private \
               addresses only (the gateway's [auth] caller_header) and only on a request whose \
               bearer token is valid: the caller the todo tools see behind the gateway",
    },
    VarDoc {
        name: "OTEL_ENABLED",
        default: "false",
        help: "true: a span per HTTP request (continuing the caller's W3C traceparent) and per \
               tool call, exported over OTLP/HTTP JSON",
    },
    VarDoc {
        name: "OTEL_SERVICE_NAME",
        default: "task-mcp-backend",
        help: "the spans' service.name",
    },
    VarDoc {
        name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        default: "http://localhost:4318/v1/traces",
        help: "http:// URL the spans are POSTed to, used as given (path included)",
    },
    VarDoc {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(empty)",
        help: "base URL for every signal when the traces endpoint is unset: /v1/traces is \
               appended",
    },
    VarDoc {
        name: "OTEL_EXPORTER_OTLP_TIMEOUT",
        default: "10000",
        help: "milliseconds one export may take; a batch that fails is dropped and counted in \
               trace_spans_dropped_total",
    },
];

/// The text of `backend --help`.
pub fn help_text() -> String {
    let mut out = format!(
        "backend {} — MCP tool server over an OpenSpec workspace\n\n\
         Usage: backend [--help] [--version]\n\
         \x20      backend backup [--wait SECS] [FILE|-]\n\
         \x20      backend restore [--wait SECS] FILE|-\n\n\
         Serves MCP Streamable HTTP on /mcp, the 2024-11-05 HTTP+SSE transport on GET /sse and\n\
         POST /messages, the Task MCP API (POST /sse, POST /mcp NDJSON, GET /tools,\n\
         POST /tools/execute), health probes and /metrics.\n\n\
         backup   writes a gzip'd tar of the workspace (WORKING_DIRECTORY's openspec/ tree) with\n\
         \x20        a SHA-256 manifest to FILE (atomically) or stdout (-, the default), holding the\n\
         \x20        workspace lock so no archive or task write is half in it.\n\
         restore  verifies a backup from FILE or stdin (-) completely, then swaps it in for the\n\
         \x20        workspace under the lock; a refused archive leaves the workspace unchanged.\n\
         \x20        Both read only WORKING_DIRECTORY, wait up to --wait (default 30) seconds for\n\
         \x20        the lock, print a summary line on stderr and exit 0 done, 1 failed, 2 bad\n\
         \x20        arguments; `backend backup --help` says more.\n\n\
         Configuration (environment variables):\n",
        env!("CARGO_PKG_VERSION")
    );
    for v in VARS {
        out.push_str(&format!(
            "  {:<22} {}\n  {:<22} default: {}\n",
            v.name, v.help, "", v.default
        ));
    }
    out.push_str(
        "\nA bad value stops start-up with exit code 2 and a message naming the variable.\n",
    );
    out
}
