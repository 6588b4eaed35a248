//! The routing state built from a [`Config`]: routes with their precomputed header sets and
//! metric handles, pools with their backend sets. Held in an `ArcSwap` ([`Shared`]) so a reload
//! swaps it atomically; a request loads the `Arc` once at its start and keeps it to the end, so
//! requests and streams in flight finish on the state they began with.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntGauge;
use tokio::sync::watch;

use crate::auth::Gate;
use crate::config::{self, Config};
use crate::edge::compress::GzipPolicy;
use crate::edge::headers::ResponseHeaders;
use crate::edge::redirect::RedirectPolicy;
use crate::metrics::{RouteMetrics, UnroutedMetrics, METRICS};
use crate::policy::split::SplitRt;
use crate::policy::zones::RouteLimiter;
use crate::routing::{Router, Target};
use crate::upstream::balance::Pool;
use crate::upstream::discovery::DnsDiscovery;
use crate::upstream::peer::{upstream_tls, Timeouts};

pub struct RouteRt {
    pub name: Arc<str>,
    /// One entry for `pool = ...`; several for `split = ...`.
    pub targets: Vec<Target>,
    pub stream: bool,
    /// MCP-aware (`mcp::view`).
    pub mcp: bool,
    /// Body bytes read ahead for the MCP view.
    pub mcp_peek: u64,
    /// Per-tool and per-method limits (`mcp_limits`), in file order.
    pub mcp_limits: Vec<(config::McpSelector, RouteLimiter)>,
    /// A caller is required (`[auth]`).
    pub auth: bool,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub timeouts: Timeouts,
    /// Bytes; 0 = unlimited.
    pub max_body_size: u64,
    pub retries: u32,
    pub headers: ResponseHeaders,
    pub active_streams: IntGauge,
    /// The route's rate zone (`limit = {...}`).
    pub limit: Option<RouteLimiter>,
    /// The split the targets come from (`split = ...`).
    pub split: Option<Arc<SplitRt>>,
    /// Metrics of requests the route answered before a pool was picked (413, 429), as
    /// `pool="-"`, so they never count against a split's first pool.
    pub unpooled: RouteMetrics,
}

pub struct State {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: Vec<RouteRt>,
    pub router: Router,
    pub pools: Vec<Arc<Pool>>,
    /// Headers of gateway-made responses outside any route (404, redirects).
    pub global_headers: ResponseHeaders,
    pub gzip: Option<GzipPolicy>,
    /// Set when the plain-HTTP listener redirects to HTTPS.
    pub redirect: Option<RedirectPolicy>,
    pub unrouted: UnroutedMetrics,
    pub redirected: UnroutedMetrics,
    /// `[auth]`: the callers of `auth = true` routes (None when it names none).
    pub gate: Option<Arc<Gate>>,
}

impl State {
    /// Build everything the hot path needs. Resolves DNS names (blocking; call from a blocking
    /// context). Errors name the config key. Pure: nothing outside the new state changes until
    /// the returned [`Activation`] is applied, right after the state is put in use.
    pub fn build(cfg: Arc<Config>, generation: u64) -> Result<(State, Activation), String> {
        State::build_after(cfg, generation, None)
    }

    /// [`State::build`] for a reload: a name that does not resolve now keeps the addresses the
    /// same-named pool of `previous` holds for it, so a reload during a DNS outage does not
    /// empty a pool (the "failed lookup keeps the last good set" rule of discovery).
    pub fn build_after(
        cfg: Arc<Config>,
        generation: u64,
        previous: Option<&State>,
    ) -> Result<(State, Activation), String> {
        let mut pools = Vec::with_capacity(cfg.pools.len());
        for (name, p) in &cfg.pools {
            let tls = match &p.tls {
                Some(t) => Some(upstream_tls(t).map_err(|e| format!("pools.{name}.ca_file: {e}"))?),
                None => None,
            };
            let previous_pool = previous
                .and_then(|st| st.pools.iter().find(|q| *q.name == *p.name.as_str()))
                .map(|q| q.as_ref());
            // A name that does not resolve keeps what the pool being replaced holds for it.
            let resolved =
                DnsDiscovery::knowing(p.servers.clone(), previous_pool).resolve_blocking();
            if resolved.is_empty() {
                log::warn!(
                    "pool {name}: no server address resolved yet; DNS is retried every {:?}",
                    p.resolve_interval
                );
            }
            pools.push(Arc::new(Pool::new(p, tls, resolved)));
        }
        let pool_by_name = |n: &str| pools.iter().find(|p| &*p.name == n).cloned();

        // The TLS certificate (re-read on reload), rate zones (their state outlives
        // reloads), splits (a rollback lasts until the next reload).
        let cert = crate::edge::certs::load(&cfg)?;
        let gate = Gate::build(&cfg.auth)?.map(Arc::new);
        // Tool names the configuration mentions are known metric labels from the start.
        crate::mcp::view::learn_tools(cfg.routes.iter().flat_map(|r| {
            r.mcp_limits.iter().filter_map(|l| match &l.selector {
                config::McpSelector::Tool(t) => Some(t.as_str()),
                config::McpSelector::Method(_) => None,
            })
        }));
        crate::mcp::view::learn_tools(
            cfg.auth
                .grants
                .iter()
                .flat_map(|g| g.tools.iter().map(String::as_str))
                .filter(|t| !t.ends_with('*')),
        );
        let zones = crate::policy::zones::plan(&cfg);
        let splits = crate::policy::split::build_all(&cfg);
        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let weighted: Vec<(String, u32)> = match &r.target {
                config::RouteTarget::Pool(p) => vec![(p.clone(), 1)],
                config::RouteTarget::Split(s) => cfg
                    .splits
                    .get(s)
                    .map(|sp| sp.pools.clone())
                    .ok_or_else(|| format!("routes[{i}].split: unknown split {s:?}"))?,
            };
            let mut targets = Vec::with_capacity(weighted.len());
            for (pool_name, weight) in weighted {
                let pool = pool_by_name(&pool_name)
                    .ok_or_else(|| format!("routes[{i}]: unknown pool {pool_name:?}"))?;
                targets.push(Target {
                    metrics: RouteMetrics::new(&r.name, &pool_name),
                    pool,
                    weight,
                });
            }
            let headers = ResponseHeaders::build(
                &r.response_headers,
                cfg.headers.hsts.as_deref(),
                cfg.headers.server.as_deref(),
            )
            .map_err(|e| format!("routes[{i}].headers: {e}"))?;
            routes.push(RouteRt {
                name: r.name.as_str().into(),
                targets,
                stream: r.stream,
                mcp: r.mcp,
                mcp_peek: r.mcp_peek,
                mcp_limits: r
                    .mcp_limits
                    .iter()
                    .filter_map(|l| {
                        RouteLimiter::new(&cfg, &l.limit, zones.zones())
                            .map(|lim| (l.selector.clone(), lim))
                    })
                    .collect(),
                auth: r.auth,
                allowed_origins: r.allowed_origins.clone(),
                allowed_hosts: r.allowed_hosts.clone(),
                timeouts: Timeouts::of(r),
                max_body_size: r.max_body_size,
                retries: r.retries,
                headers,
                active_streams: METRICS.active_streams.with_label_values(&[&r.name]),
                unpooled: RouteMetrics::new(&r.name, "-"),
                limit: r
                    .limit
                    .as_ref()
                    .and_then(|l| RouteLimiter::new(&cfg, l, zones.zones())),
                split: match &r.target {
                    config::RouteTarget::Split(s) => splits.get(s).cloned(),
                    config::RouteTarget::Pool(_) => None,
                },
            });
        }
        let router = Router::new(
            cfg.routes
                .iter()
                .map(|r| (r.path.as_str(), r.host.as_deref())),
        );
        let global_headers = ResponseHeaders::build(
            &cfg.headers.set,
            cfg.headers.hsts.as_deref(),
            cfg.headers.server.as_deref(),
        )
        .map_err(|e| format!("headers: {e}"))?;
        let redirect = cfg.listeners.http.as_ref().and_then(|h| {
            let fallback = cfg
                .listeners
                .https
                .as_ref()
                .map(|s| s.address.ip().to_string())
                .unwrap_or_else(|| h.address.ip().to_string());
            RedirectPolicy::from_config(h, fallback)
        });
        let activation = Activation {
            cert,
            zones,
            splits: splits.into_values().collect(),
        };
        let state = State {
            generation,
            gzip: GzipPolicy::from_config(&cfg.gzip),
            routes,
            router,
            pools,
            global_headers,
            redirect,
            unrouted: UnroutedMetrics::new("-"),
            redirected: UnroutedMetrics::new("-redirect"),
            gate,
            config: cfg,
        };
        Ok((state, activation))
    }

    /// Every route has at least one pool ready to serve (the `/readyz` rule: a healthy backend,
    /// which in a health-checked pool has passed a check).
    pub fn ready(&self) -> bool {
        !self.routes.is_empty()
            && self
                .routes
                .iter()
                .all(|r| r.targets.iter().any(|t| t.pool.ready()))
    }
}

/// What a new state changes outside itself: the certificate of new handshakes, the live rate
/// zones (rates, sizes, `/status`) and the split gauges. Applied right after the state is swapped
/// in, so a build that fails at any step changes nothing.
pub struct Activation {
    cert: Option<Arc<config::CertKey>>,
    zones: crate::policy::zones::ZonePlan,
    splits: Vec<Arc<SplitRt>>,
}

impl Activation {
    pub fn apply(self) {
        crate::edge::certs::install(self.cert);
        self.zones.commit();
        crate::policy::split::publish(&self.splits);
    }
}

/// The current state and what changes it.
pub struct Shared {
    current: ArcSwap<State>,
    generation: watch::Sender<u64>,
    pub config_path: PathBuf,
}

impl Shared {
    pub fn new(state: State, config_path: PathBuf) -> Arc<Shared> {
        let (tx, _rx) = watch::channel(state.generation);
        METRICS.config_generation.set(state.generation as i64);
        Arc::new(Shared {
            current: ArcSwap::from_pointee(state),
            generation: tx,
            config_path,
        })
    }

    /// The state a new request runs on.
    #[inline]
    pub fn load(&self) -> Arc<State> {
        self.current.load_full()
    }

    /// Notified with the new generation after every swap (background tasks re-read pools).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-read the config file and swap the state; an invalid file changes nothing.
    /// Blocking (file and DNS): call from a blocking context.
    pub fn reload(&self) -> Result<u64, String> {
        let result = config::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                let running = self.current.load();
                if cfg.tracing != running.config.tracing {
                    // The exporter is set up once per process, like the listeners.
                    log::warn!(
                        "{}: [tracing] changed: it applies at the next start (or -u upgrade); \
                         the running gateway keeps its setting",
                        self.config_path.display()
                    );
                }
                let next = running.generation + 1;
                State::build_after(Arc::new(cfg), next, Some(&self.current.load()))
            });
        match result {
            Ok((state, activation)) => {
                let generation = state.generation;
                self.current.store(Arc::new(state));
                activation.apply();
                METRICS.config_generation.set(generation as i64);
                METRICS.config_reloads.with_label_values(&["ok"]).inc();
                self.generation.send_replace(generation);
                Ok(generation)
            }
            Err(e) => {
                METRICS.config_reloads.with_label_values(&["error"]).inc();
                Err(e)
            }
        }
    }
}
