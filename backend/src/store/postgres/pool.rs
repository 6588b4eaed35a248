//! Connections: a pool of at most `DATABASE_POOL_SIZE`, each driven on the store's runtime
//! with its prepared statements; every wait bounded by `DATABASE_TIMEOUT_MS`.

use super::sql::migrate;
use super::PostgresStore;
use crate::store::StoreError;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A pooled connection: its client, the task driving its socket (aborted when dropped) and
/// its prepared statements.
pub(super) struct Conn {
    client: Client,
    driver: JoinHandle<()>,
    statements: HashMap<&'static str, Statement>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    async fn statement(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// Inside `with`: a domain answer (keep the connection) or a database failure (drop it).
pub(super) enum Failure {
    Store(StoreError),
    Db(String),
}

impl PostgresStore {
    fn timeout_ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    /// Runs `fut` on the store's runtime, bounded by the timeout; `doing` prefixes a timeout.
    fn block<T>(
        &self,
        doing: &str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        self.handle
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
            .map_err(|_| format!("{doing}no answer within {} ms", self.timeout_ms()))?
            .map_err(|e| why(&e))
    }

    /// Spawns the task that drives a connection's socket.
    fn drive(
        &self,
        conn: impl Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    ) -> JoinHandle<()> {
        self.handle.spawn(async move {
            let _ = conn.await;
        })
    }

    /// A new connection, its statement timeout set, migrations applied if not done yet.
    fn connect(&self) -> Result<Conn, String> {
        let mut conn = self.block("connecting: ", async {
            let (client, driver) = match &self.tls {
                Some(tls) => {
                    let (client, conn) = self.config.connect(tls.clone()).await?;
                    (client, self.drive(conn))
                }
                None => {
                    let (client, conn) = self.config.connect(NoTls).await?;
                    (client, self.drive(conn))
                }
            };
            // Built at once so that a timeout from here on drops (and aborts) it.
            let conn = Conn {
                client,
                driver,
                statements: HashMap::new(),
            };
            conn.client
                .batch_execute(&format!(
                    "SET statement_timeout = {}",
                    self.timeout_ms().max(1)
                ))
                .await?;
            Ok(conn)
        })?;
        if !self.migrated.load(Ordering::Acquire) {
            self.handle
                .block_on(async {
                    tokio::time::timeout(self.timeout, migrate(&mut conn.client)).await
                })
                .map_err(|_| format!("migrating: no answer within {} ms", self.timeout_ms()))??;
            self.migrated.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// Runs `f` with a pooled connection; a connection whose call failed is not kept.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Session<'_>) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let permit = self
            .handle
            .block_on(async {
                tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned()).await
            })
            .map_err(|_| {
                self.unavailable(format!(
                    "all {} connections (DATABASE_POOL_SIZE) stayed busy for {} ms",
                    self.pool_size,
                    self.timeout_ms()
                ))
            })?
            .map_err(|e| self.unavailable(e))?;
        let pooled = self.idle.lock().ok().and_then(|mut idle| {
            // The server closed those (restart, idle timeout): not reused.
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        });
        let conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| self.unavailable(e))?,
        };
        let mut session = Session { store: self, conn };
        let result = f(&mut session);
        let keep = !matches!(result, Err(Failure::Db(_))) && !session.conn.client.is_closed();
        if keep {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(session.conn);
            }
        }
        drop(permit);
        result.map_err(|f| match f {
            Failure::Store(e) => e,
            Failure::Db(why) => self.unavailable(why),
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Not a blocking shutdown: this may run inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One call's connection, statement by statement.
pub(super) struct Session<'a> {
    store: &'a PostgresStore,
    conn: Conn,
}

impl Session<'_> {
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Failure> {
        let conn = &mut self.conn;
        self.store
            .block("", async move {
                let stmt = conn.statement(sql).await?;
                conn.client.query(&stmt, params).await
            })
            .map_err(Failure::Db)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Failure> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, Failure> {
        let conn = &mut self.conn;
        self.store
            .block("", async move {
                let stmt = conn.statement(sql).await?;
                conn.client.execute(&stmt, params).await
            })
            .map_err(Failure::Db)
    }
}

/// TLS as libpq's `sslmode=prefer|require`: encrypted, the certificate not verified.
pub(super) fn tls_connector() -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_verify(SslVerifyMode::NONE);
    let mut tls = MakeTlsConnector::new(builder.build());
    tls.set_callback(|ssl, _| {
        ssl.set_verify_hostname(false);
        Ok(())
    });
    Ok(tls)
}

/// What went wrong, with its causes ("error connecting to server: Connection refused"); a
/// server error as severity, SQLSTATE and message (not its DETAIL, which may quote values).
pub(super) fn why(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
