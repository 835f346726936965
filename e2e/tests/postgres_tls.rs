//! Postgres over TLS, as managed services require it: a private cluster of the machine's
//! PostgreSQL that refuses plaintext (`hostnossl … reject`), with a certificate for `localhost`
//! signed by a CA the test makes. Every `sslmode` behaves as libpq's does, for the pool, the
//! migrations and the `LISTEN` connection, and both binaries connect with it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::Command;

use aerugo_e2e::postgres::{Postgres, Setup};
use aerugo_e2e::*;

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.crt"),
    ]));
}

/// A server certificate for `localhost` only (`server.crt`, `server.key`), signed by `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &format!("{ca}.crt"),
        "-CAkey",
        &format!("{ca}.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]));
}

/// Whether a session on `url` works, and then whether it is encrypted.
async fn session(url: &str) -> Result<bool, String> {
    let pool = aerugo_db::pool(url, 1).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_behaves_as_libpq_and_both_binaries_connect_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path(), "ca");
    make_ca(certs.path(), "other-ca");
    make_server_cert(certs.path(), "ca");
    let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let (crt, key) = (read("server.crt"), read("server.key"));
    let setup = Setup {
        settings: &["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"],
        hba: Some("local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"),
        files: &[("server.crt", &crt), ("server.key", &key)],
    };
    let Some(pg) = Postgres::start_with(&setup) else {
        aerugo_test_support::skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)");
        return;
    };
    let ca = certs.path().join("ca.crt").display().to_string();
    let other = certs.path().join("other-ca.crt").display().to_string();
    let at = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/postgres?{query}", pg.port);

    // Plaintext is refused by the server; every TLS mode encrypts.
    let plain = session(&at("127.0.0.1", "sslmode=disable")).await;
    assert!(plain.as_ref().is_err_and(|e| e.contains("no encryption") || e.contains("pg_hba")), "{plain:?}");
    for query in ["application_name=default-is-prefer", "sslmode=prefer", "sslmode=require"] {
        assert_eq!(session(&at("127.0.0.1", query)).await, Ok(true), "{query}");
    }
    // verify-ca checks the chain, not the name (the certificate is for localhost only).
    assert_eq!(session(&at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))).await, Ok(true));
    let wrong_ca = session(&at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}"))).await;
    assert!(wrong_ca.is_err(), "a chain to another CA is refused: {wrong_ca:?}");
    // require with a root certificate checks the chain as verify-ca does (libpq's rule).
    assert!(session(&at("127.0.0.1", &format!("sslmode=require&sslrootcert={other}"))).await.is_err());
    // verify-full checks the name too.
    let mismatch = session(&at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    assert!(mismatch.is_err(), "127.0.0.1 is not in the certificate: {mismatch:?}");
    let full = at("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(session(&full).await, Ok(true));
    // A missing root file is a clear configuration error, not a connection attempt.
    let missing = aerugo_db::pool(&at("localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), 1);
    assert!(missing.is_err_and(|e| e.to_string().contains("sslrootcert")));

    // Migrations, the LISTEN connection, and both binaries, all on verify-full.
    aerugo_db::migrate(&full).await.expect("migrate over TLS");
    let mut listener = aerugo_db::notify::listen(&full).await.expect("listen over TLS");
    aerugo_db::notify::announce(
        &aerugo_db::pool(&full, 1).unwrap().get().await.unwrap(),
        aerugo_db::notify::Change::Everything("tls-test"),
    )
    .await
    .expect("announce");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), listener.payloads.recv()).await;
    assert!(matches!(heard, Ok(Some(_))), "the LISTEN connection hears over TLS");
    run(Command::new(dataplane_bin()).arg("migrate").env("AERUGO_DATABASE_URL", &full));
    let server = Server::start(&full, Storage::File);
    assert_eq!(http_status(&server.host, "GET", "/readyz"), Some(200));
    let refused = Command::new(dataplane_bin())
        .arg("migrate")
        .env("AERUGO_DATABASE_URL", at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the data plane refuses a server whose name does not match");
    let secrets = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let applied = Command::new(operator_bin())
        .args(["apply", "-f"])
        .arg(&examples)
        .arg("--secrets-dir")
        .arg(secrets.path())
        .env("AERUGO_DATABASE_URL", &full)
        .env("AERUGO_STORAGE", "none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(secrets.path().join("team/ci-push.yaml").exists(), "the operator wrote through TLS: {stderr}");
}
