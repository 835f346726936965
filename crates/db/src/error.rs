//! The database crate's error type, with a classification of "the database is unavailable"
//! so the HTTP layer can answer 503 with `Retry-After` instead of a bare 500.

/// Database failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query or connection failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The pool could not be built.
    #[error("database pool configuration: {0}")]
    PoolBuild(String),
    /// The database URL is malformed.
    #[error("database url: {0}")]
    Config(tokio_postgres::Error),
    /// TLS to the database cannot be set up as the URL asks (`sslmode`, `sslrootcert`).
    #[error("database TLS: {0}")]
    Tls(String),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl Error {
    /// True when the failure is the database being unreachable or overloaded rather than a
    /// bad query: callers should answer 503 and let the client retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Postgres(e) => {
                let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
                // 08: connection exception; 57P: operator intervention (shutdown, restart);
                // 53300: too many connections.
                let class = e.code().is_some_and(|c| {
                    let c = c.code();
                    c.starts_with("08") || c.starts_with("57P") || c == "53300"
                });
                e.is_closed() || io || class
            }
            _ => false,
        }
    }

    /// True when a unique or foreign-key constraint rejected the write.
    pub fn is_constraint_violation(&self) -> bool {
        matches!(self, Error::Postgres(e) if e.code().is_some_and(|c| c.code().starts_with("23")))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
