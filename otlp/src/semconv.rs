//! Values fixed by OpenTelemetry's semantic conventions that both tiers label with.

/// MCP's methods (revisions 2025-03-26 through 2026-07-28): the well-known values of
/// `mcp.method.name` (OpenTelemetry's MCP conventions). The gateway's `mcp_method` metric label
/// and both tiers' spans use these; any other method is `other`, which keeps a label's
/// cardinality bounded whatever a client sends.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The method's own name when MCP defines it, else None.
pub fn mcp_method(method: &str) -> Option<&'static str> {
    MCP_METHODS.iter().find(|k| **k == method).copied()
}

/// `mcp.method.name` of a JSON-RPC method: MCP's own name, anything else `other`.
pub fn mcp_method_name(method: &str) -> &'static str {
    mcp_method(method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_name_and_others_are_bounded() {
        assert_eq!(mcp_method_name("tools/call"), "tools/call");
        assert_eq!(
            mcp_method_name("notifications/progress"),
            "notifications/progress"
        );
        assert_eq!(mcp_method_name("tools/CALL"), "other");
        assert_eq!(mcp_method_name(&"x".repeat(10_000)), "other");
        assert!(mcp_method("initialize").is_some() && mcp_method("").is_none());
    }
}
