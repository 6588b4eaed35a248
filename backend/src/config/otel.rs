//! OTEL_*: the backend's spans (one per HTTP request, one per tool call) exported over
//! OTLP/HTTP JSON, with the OpenTelemetry names the user's `.env` files already carry.

use super::{parse_num, ConfigError};
use std::time::Duration;

/// Where and as whom the spans go, when OTEL_ENABLED is true.
#[derive(Debug, Clone)]
pub struct Otel {
    /// OTEL_SERVICE_NAME: the spans' `service.name`.
    pub service_name: String,
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as given), else OTEL_EXPORTER_OTLP_ENDPOINT
    /// plus `/v1/traces`, else the OTLP default `http://localhost:4318/v1/traces`.
    pub endpoint: otlp::Endpoint,
    /// OTEL_EXPORTER_OTLP_TIMEOUT: the deadline of one export.
    pub timeout: Duration,
}

/// None when OTEL_ENABLED is unset or false; the other variables are only read when it is on.
pub(super) fn otel_from(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Otel>, ConfigError> {
    let enabled = match var("OTEL_ENABLED")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false" | "0" | "no" | "off") => false,
        Some("true" | "1" | "yes" | "on") => true,
        Some(other) => {
            return Err(ConfigError {
                var: "OTEL_ENABLED",
                reason: format!("{:?} is not true or false", crate::bounded::bounded(other)),
            })
        }
    };
    if !enabled {
        return Ok(None);
    }
    let (name, url) = match (
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        // The base URL of every signal: the traces path is appended (OTLP exporter spec).
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            otlp::export::DEFAULT_ENDPOINT.to_string(),
        ),
    };
    let endpoint = otlp::Endpoint::parse(&url).map_err(|reason| ConfigError {
        var: name,
        reason: crate::bounded::bounded(&reason).to_string(),
    })?;
    let timeout_ms = parse_num::<u64>(
        &var("OTEL_EXPORTER_OTLP_TIMEOUT"),
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        otlp::export::DEFAULT_TIMEOUT.as_millis() as u64,
        100,
        600_000,
    )?;
    Ok(Some(Otel {
        service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| crate::SERVICE_NAME.to_string()),
        endpoint,
        timeout: Duration::from_millis(timeout_ms),
    }))
}
