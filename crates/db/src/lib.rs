//! All of Aerugo's SQL: the embedded migrations, the connection pool, and typed queries.
//! Every query takes a `GenericClient`, so callers compose them inside one transaction.
//! This crate knows nothing of HTTP, Kubernetes or blob storage.

pub mod audit;
pub mod declared;
pub mod error;
pub mod events;
pub mod fsck;
pub mod gc;
pub mod mirrors;
pub mod notify;
pub mod registry;
pub mod retention;
pub mod tenancy;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod uploads;

pub use deadpool_postgres::{GenericClient, Object as PooledClient, Pool, Transaction};
pub use error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Arbitrary constant naming the advisory lock that serializes concurrent `migrate` runs.
const MIGRATION_LOCK: i64 = 0x0AE2_0600_0001;

/// Builds a connection pool of at most `max_size` connections for `url` (TLS as its
/// `sslmode` says, see [`tls`]).
pub fn pool(url: &str, max_size: usize) -> Result<Pool> {
    let (pg, tls) = tls::connection(url)?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::PoolBuild(e.to_string()))
}

/// Applies every pending migration; a no-op when the schema is current. Safe to run from
/// several processes at once: they queue on an advisory lock.
pub async fn migrate(url: &str) -> Result<Vec<String>> {
    let (mut client, connection) = tls::connect(url).await?;
    let driver = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    drop(client);
    driver.abort();
    let applied = report.map_err(|e| Error::Migration(e.to_string()))?;
    Ok(applied.applied_migrations().iter().map(|m| m.to_string()).collect())
}

/// Bytes in binary units (`1.5 GiB`), as quota messages and statuses show them.
pub fn binary_units(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A stable fingerprint of the embedded migrations (names the test template database).
pub fn schema_fingerprint() -> u64 {
    embedded::migrations::runner().get_migrations().iter().fold(0u64, |acc, m| acc.rotate_left(7) ^ m.checksum())
}
