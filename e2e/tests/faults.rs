//! Faults with real processes: a data-plane node killed in the middle of an upload (the client
//! resumes on another node and the blob is correct), and an operator killed in the middle of
//! reconciling (the next leader finishes the job, with nothing half-applied).

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::process::Command;
use std::time::{Duration, Instant};

use aerugo_e2e::postgres::Postgres;
use aerugo_e2e::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_node_killed_mid_upload_is_resumed_on_another() {
    if aerugo_test_support::service_env("AERUGO_TEST_S3").is_none() {
        return;
    }
    let database = fresh_database().await;
    let a = Server::start(&database, Storage::S3);
    let b = Server::start_next_to(&a, &database, Storage::S3);
    let admin = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    let data: Vec<u8> = (0..9_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8).collect();
    let digest = sha256_digest(&data);
    let mut upload = ChunkedUpload::start(&admin, &a.host, "faults/app");
    upload.patch(&a.host, &data[..6_000_000]);
    // Node a dies (SIGKILL): what it acknowledged is in Postgres and S3.
    drop(a);
    let status = upload.status(&b.host);
    assert!(status.to_ascii_lowercase().contains("range: 0-5999999"), "node b sees the progress: {status}");
    upload.finish(&b.host, &data[6_000_000..], &digest);
    let out = run(Command::new("curl").args([
        "-sSfL",
        "-u",
        &admin,
        &format!("http://{}/v2/faults/app/blobs/{digest}", b.host),
    ]));
    assert_eq!(sha256_digest(&out.stdout), digest, "the blob is correct");
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_is_finished_by_the_next_leader() {
    use aerugo_kube_emulator::Emulator;

    let database = database_with_admin().await;
    let db = aerugo_db::pool(&database, 1).expect("pool");
    let cluster = EmulatedCluster::start().await;
    let (emulator, kubeconfig) = (&cluster.emulator, &cluster.kubeconfig);
    let object = |kind: &str, name: &str, spec: Value| json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": kind, "metadata": { "name": name, "namespace": "team" }, "spec": spec });
    emulator
        .seed(object("Organization", "acme", json!({ "members": [{ "user": "admin", "role": "Owner" }] })))
        .unwrap();
    const REPOS: usize = 300;
    for i in 0..REPOS {
        emulator
            .seed(object("Repository", &format!("r{i}"), json!({ "organizationRef": { "name": "acme" } })))
            .unwrap();
    }
    let ready = |e: &Emulator| {
        e.list_raw("aerugo.io/v1alpha1", "repositories", Some("team"))
            .iter()
            .filter(|r| {
                r["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count()
    };
    let first = operator_process(kubeconfig, &database, "replica-a", &[("RUST_LOG", "error")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(emulator) == 0 {
        assert!(Instant::now() < deadline, "the first replica never reconciled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL, mid-run: no chance to clean up or release the Lease
    let at_kill = ready(emulator);
    let killed = Instant::now();
    let _second = operator_process(kubeconfig, &database, "replica-b", &[("RUST_LOG", "error")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(emulator) < REPOS {
        assert!(Instant::now() < deadline, "the next leader left {} of {REPOS} unfinished", REPOS - ready(emulator));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = emulator.get_raw("coordination.k8s.io/v1", "leases", Some("default"), "aerugo-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    let conn = db.get().await.unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_one("SELECT COUNT(*), COUNT(DISTINCT k8s_uid) FROM repositories WHERE managed_by = 'kubernetes'", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((rows, distinct), (REPOS as i64, REPOS as i64), "one row per object, none twice, none missing");
    eprintln!(
        "{at_kill} of {REPOS} Ready when the leader was killed; the next leader finished {} s later",
        killed.elapsed().as_secs()
    );
}

/// Postgres crashes and comes back while pushes and pulls run: during the outage requests
/// fail fast with 503 and `Retry-After`, afterwards they succeed, and nothing is half-written
/// (the consistency scan is clean; every tag resolves).
#[tokio::test]
async fn postgres_restarting_under_load_fails_fast_and_loses_nothing() {
    let Some(pg) = Postgres::start() else {
        aerugo_test_support::skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)");
        return;
    };
    aerugo_db::migrate(&pg.url()).await.expect("migrate");
    let server = Server::start(&pg.url(), Storage::File);
    let admin = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (host, admin, stop) = (server.host.clone(), admin.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let body = format!("layer {i}");
                let digest = sha256_digest(body.as_bytes());
                let started = Instant::now();
                let out = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-D", "-", "-u", &admin, "-X", "POST", "--data-binary", &body])
                    .arg(format!("http://{host}/v2/load/app/blobs/uploads/?digest={digest}"))
                    .output()
                    .expect("curl");
                let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
                let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                seen.push((code, head.contains("retry-after"), started.elapsed()));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.crash();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.up();
    // Pushes work again within a few seconds (the pool reconnects).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", &admin])
            .arg(format!("http://{}/v2/load/app/tags/list", server.host))
            .output()
            .expect("curl");
        if matches!(out.stdout.as_slice(), b"200" | b"404") {
            break;
        }
        assert!(Instant::now() < deadline, "the data plane never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().expect("load thread");
    let ok = seen.iter().filter(|(c, ..)| *c == 201).count();
    let failed: Vec<_> = seen.iter().filter(|(c, ..)| *c != 201).collect();
    assert!(ok > 10 && !failed.is_empty(), "pushes before, during and after the outage: {seen:?}");
    for (code, retry_after, took) in &failed {
        assert_eq!(*code, 503, "an outage answers 503: {seen:?}");
        assert!(*retry_after, "with Retry-After");
        assert!(*took < Duration::from_secs(10), "and fast: {took:?}");
    }
    assert_eq!(seen.last().map(|s| s.0), Some(201), "the last pushes succeed");
    // Nothing half-written: a manifest over the pushed blobs, then the consistency scan.
    let out = run(Command::new(dataplane_bin())
        .arg("fsck")
        .env("AERUGO_DATABASE_URL", pg.url())
        .env("AERUGO_STORAGE", "file")
        .env("AERUGO_STORAGE_PATH", server.blobs.as_ref().unwrap())
        .env("AERUGO_LOG", "warn"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(" 0 problems"), "{report}");
    eprintln!(
        "{ok} pushes succeeded, {} failed fast with 503 during the outage; fsck: {}",
        failed.len(),
        report.trim()
    );
}

/// Sends `request` on a fresh connection, keeps it open, and returns what the server answered
/// (or `None` if it closed without a word) and how long it took.
fn exchange(host: &str, request: &[u8]) -> (Option<String>, Duration) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    ((!text.is_empty()).then_some(text), started.elapsed())
}

/// Hostile clients: a body that stalls, a request head that never ends, headers too large.
/// Each is cut off with a clear status within its limit, and the node keeps serving.
#[tokio::test]
async fn stalled_bodies_slow_heads_and_huge_headers_are_cut_off() {
    let database = fresh_database().await;
    let server = Server::start_with_env(&database, Storage::File, &[("AERUGO_BODY_IDLE_TIMEOUT", "2")]);
    let auth = basic(ADMIN_USER, ADMIN_PASSWORD);
    let digest = sha256_digest(b"never sent");
    // A body announcing 1,000 bytes that sends 10 and stops.
    let stalled = format!(
        "POST /v2/limits/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
        server.host
    );
    let (answer, took) = exchange(&server.host, stalled.as_bytes());
    let answer = answer.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID") && answer.contains("sent nothing for 2 s"), "{answer}");
    assert!(took < Duration::from_secs(8), "cut off after the idle timeout: {took:?}");
    // A request head that never ends (actix-web's 5 s client request timeout).
    let (answer, took) = exchange(&server.host, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    assert!(answer.as_deref().is_none_or(|a| a.starts_with("HTTP/1.1 408")), "{answer:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // 64 KiB of header.
    let huge = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n", "a".repeat(64 * 1024));
    let (answer, _) = exchange(&server.host, huge.as_bytes());
    let answer = answer.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("request headers too large"), "{answer}");
    // Still serving, and nothing of the stalled upload was recorded.
    assert_eq!(http_status(&server.host, "GET", "/healthz"), Some(200));
    let head = http_raw_with(&server.host, "HEAD", &format!("/v2/limits/app/blobs/{digest}"), Some(&auth)).unwrap();
    assert!(head.starts_with("HTTP/1.0 404") || head.starts_with("HTTP/1.1 404"), "{head}");
}
