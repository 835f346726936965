//! `migrate` against a real Postgres: applies everything once, is a no-op after, and is safe to
//! run from several processes at once.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use aerugo_db::testing::{admin_url, with_database};

async fn empty_database() -> String {
    let (client, connection) =
        tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.expect("connect (is Postgres running?)");
    let driver = tokio::spawn(connection);
    let name = format!("aerugo_t_{}", uuid::Uuid::new_v4().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    driver.abort();
    with_database(&admin_url(), &name)
}

/// The migration files shipped in `migrations/`.
fn shipped() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql")))
        .count()
}

#[tokio::test]
async fn migrate_applies_once_then_is_a_no_op() {
    let url = empty_database().await;
    let first = aerugo_db::migrate(&url).await.expect("first migrate");
    assert_eq!(first.len(), shipped(), "every shipped migration applies: {first:?}");
    assert!(aerugo_db::migrate(&url).await.expect("second migrate").is_empty());
}

#[tokio::test]
async fn concurrent_migrations_queue_on_the_lock() {
    let url = empty_database().await;
    let runs = futures_join(aerugo_db::migrate(&url), aerugo_db::migrate(&url)).await;
    let applied: usize = [runs.0.expect("migrate a"), runs.1.expect("migrate b")].iter().map(Vec::len).sum();
    assert_eq!(applied, shipped(), "each migration is applied by exactly one of the two runs");
}

async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}
