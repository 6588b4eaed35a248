//! The item store a test's backend replicas share, for suites run once per store: SQLite at
//! its default path in the workspace, or a PostgreSQL server of the test's own
//! ([`crate::postgres`]). `on_both_stores!(a, b)` makes `sqlite::a`, `postgres::a`, ... that
//! call `a(Kind::Sqlite)` and `a(Kind::Postgres)`.

use crate::postgres::Postgres;
use crate::Backend;
use std::path::Path;

/// Which store the replicas of a test share.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A test's store (a PostgreSQL server lives as long as this).
pub struct Db {
    pub pg: Option<Postgres>,
    url: String,
}

impl Db {
    pub fn start(kind: Kind) -> Db {
        match kind {
            Kind::Sqlite => Db {
                pg: None,
                url: String::new(),
            },
            Kind::Postgres => {
                let pg = Postgres::start();
                let url = pg.url();
                Db { pg: Some(pg), url }
            }
        }
    }

    /// `extra` plus DATABASE_URL for PostgreSQL.
    pub fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = extra.to_vec();
        if self.pg.is_some() {
            env.push(("DATABASE_URL", &self.url));
        }
        env
    }

    /// Two replicas on one workspace and this store, started together (so both may migrate
    /// at once).
    pub fn two_replicas(&self, ws: &Path, extra: &[(&str, &str)]) -> (Backend, Backend) {
        let env = self.env(extra);
        std::thread::scope(|s| {
            let a = s.spawn(|| Backend::start(ws, &env));
            let b = Backend::start(ws, &env);
            (a.join().expect("replica A started"), b)
        })
    }
}

/// The suite, once per store: `sqlite::NAME` and `postgres::NAME` call `NAME(Kind)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::stores::Kind::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::stores::Kind::Postgres) } )*
        }
    };
}
