//! Test support: a fresh, migrated database per test, cloned from a template that is migrated
//! once per schema version. Enabled by the `test-support` feature; never used by binaries.

use uuid::Uuid;

use crate::Result;

/// Arbitrary constant naming the advisory lock that serializes template creation.
const TEMPLATE_LOCK: i64 = 0x0AE2_0600_0002;

/// The server used by tests: `AERUGO_TEST_DATABASE_URL`, else the local trust-auth Postgres.
pub fn admin_url() -> String {
    std::env::var("AERUGO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty, fully migrated database and returns its URL.
pub async fn fresh_database() -> Result<String> {
    let admin = admin_url();
    let (client, connection) = crate::tls::connect(&admin).await?;
    let driver = tokio::spawn(connection);
    let template = format!("aerugo_tmpl_{:016x}", crate::schema_fingerprint());
    client.execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK]).await?;
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template]).await?.is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE {template}")).await?;
        crate::migrate(&with_database(&admin, &template)).await?;
    }
    let name = format!("aerugo_t_{}", Uuid::new_v4().simple());
    let created = client.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK]).await?;
    created?;
    drop(client);
    driver.abort();
    Ok(with_database(&admin, &name))
}

/// `url` with its database path replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let base = match url.rsplit_once('/') {
        Some((head, _)) if head.ends_with('/') || !head.contains("://") => url.to_owned(),
        Some((head, _)) => head.to_owned(),
        None => url.to_owned(),
    };
    format!("{base}/{database}")
}
