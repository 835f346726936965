//! Events end to end: two data-plane processes share one database; 1,000 pushes go through
//! both; the node delivering the subscription is SIGKILLed in the middle and the receiver (an
//! HTTP server in this test) is down for a while. Every event must arrive, in order per
//! repository, duplicates only as the same event id, signed; another organization's events
//! never reach this subscription; a replay delivers them all again.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerugo_e2e::receiver::Receiver;
use aerugo_e2e::*;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

const SECRET: &str = "a-signing-secret-of-the-test";

/// Whether `signature` (`t=<unix>,sha256=<hex>`) is the HMAC-SHA256 of `"<t>.<body>"` with `secret`.
fn signature_valid(secret: &[u8], signature: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sig = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("sha256", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, sig) else { return false };
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).expect("key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn api(host: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
    let (status, response) = request(host, method, path, Some("application/json"), &bytes);
    (status, serde_json::from_slice(&response).unwrap_or(Value::Null))
}

fn push_blob(host: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    let (status, body) = request(host, "POST", &path, Some("application/octet-stream"), data);
    assert_eq!(status, 201, "blob push: {}", String::from_utf8_lossy(&body));
    digest
}

/// An image manifest over `config` and `layer` (pushed to the repository), told apart by `seq`.
fn manifest(config: &(String, usize), layer: &(String, usize), seq: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.0, "size": layer.1}],
        "annotations": {"seq": seq.to_string()},
    }))
    .unwrap()
}

async fn lease_owner(database: &str, org: &str) -> Option<String> {
    let db = aerugo_db::pool(database, 1).unwrap();
    let client = db.get().await.unwrap();
    client
        .query_opt(
            "SELECT s.lease_owner FROM event_subscriptions s JOIN organizations o ON o.id = s.org_id
              WHERE o.name = $1 AND s.name = 'ci'",
            &[&org],
        )
        .await
        .unwrap()
        .and_then(|r| r.get(0))
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_1000_pushes_arrives_in_order_through_a_node_kill_and_a_receiver_outage() {
    let database = fresh_database().await;
    let receiver = Receiver::start().await;
    let other_receiver = Receiver::start().await;
    let env = |node: &'static str| {
        [
            ("AERUGO_NODE_NAME", node),
            ("AERUGO_EVENT_LEASE_SECONDS", "2"),
            ("AERUGO_EVENT_RETRY_MAX_SECONDS", "1"),
            ("AERUGO_CLIENT_RATE_LIMIT", "0"),
            ("AERUGO_CACHE", "off"),
        ]
    };
    let a = Server::start_with_env(&database, Storage::File, &env("a"));
    let b = Server::start_next_to_with_env(&a, &database, Storage::File, &env("b"));
    let mut nodes: HashMap<&str, Server> = HashMap::from([("a", a), ("b", b)]);
    let host = |n: &HashMap<&str, Server>, k: &str| n[k].host.clone();
    let (host_a, host_b) = (host(&nodes, "a"), host(&nodes, "b"));

    // Two organizations created through the management API, each subscribed to its own receiver.
    let t0 = time::OffsetDateTime::now_utc();
    // acme's subscription takes every type, so each repository's sequence has no gaps; other's
    // takes three.
    let every_type: Vec<&str> = aerugo_db::events::TYPES.to_vec();
    let some_types = vec!["io.aerugo.manifest.pushed", "io.aerugo.tag.created", "io.aerugo.tag.moved"];
    for (org, url, types) in [("acme", receiver.url(), every_type), ("other", other_receiver.url(), some_types)] {
        assert_eq!(api(&host_a, "POST", "/api/v1/orgs", json!({ "name": org })).0, 201);
        let subscription = json!({
            "name": "ci",
            "endpoint": url,
            "types": types,
            "batchSize": 20,
            "signingSecret": SECRET,
        });
        let (status, body) = api(&host_a, "POST", &format!("/api/v1/orgs/{org}/subscriptions"), subscription);
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = api(
        &host_a,
        "POST",
        "/api/v1/orgs/acme/subscriptions",
        json!({
            "name": "bad", "endpoint": "ftp://x/", "types": ["io.aerugo.manifest.pushed"]
        }),
    );
    assert_eq!(status, 400, "a bad endpoint is refused: {body}");

    // Four repositories of acme (and one of other), each with its blobs.
    const REPOS: usize = 4;
    const PUSHES: usize = 1000;
    let repos: Vec<String> = (0..REPOS).map(|r| format!("acme/app{r}")).collect();
    let mut images = Vec::new();
    let extra = ["other/app".to_owned(), "acme/outage".to_owned()];
    for repo in repos.iter().chain(&extra) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#).into_bytes();
        let layer = repo.repeat(100).into_bytes();
        let c = (push_blob(&host_a, repo, &config), config.len());
        let l = (push_blob(&host_a, repo, &layer), layer.len());
        images.push((c, l));
    }
    for seq in 0..20 {
        let (status, _) = request(
            &host_b,
            "PUT",
            "/v2/other/app/manifests/latest",
            Some("application/vnd.oci.image.manifest.v1+json"),
            &manifest(&images[REPOS].0, &images[REPOS].1, seq),
        );
        assert_eq!(status, 201);
    }

    // One writer per repository, pushing in order, through both nodes in turn; a push that
    // meets a dead node is sent again to the live one (same content: same digest).
    let alive = Arc::new(Mutex::new(vec![host_a.clone(), host_b.clone()]));
    let done = Arc::new(AtomicUsize::new(0));
    let acknowledged: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let writers: Vec<_> = (0..REPOS)
        .map(|r| {
            let (alive, done, acknowledged) = (alive.clone(), done.clone(), acknowledged.clone());
            let (repo, (config, layer)) = (repos[r].clone(), images[r].clone());
            std::thread::spawn(move || {
                for i in 0..PUSHES / REPOS {
                    let body = manifest(&config, &layer, i);
                    let digest = sha256_digest(&body);
                    let mut attempt = i + r;
                    loop {
                        let node = {
                            let alive = alive.lock().unwrap();
                            alive[attempt % alive.len()].clone()
                        };
                        let path = format!("/v2/{repo}/manifests/latest");
                        let sent = std::panic::catch_unwind(|| {
                            request(&node, "PUT", &path, Some("application/vnd.oci.image.manifest.v1+json"), &body)
                        });
                        match sent {
                            Ok((201, _)) => break,
                            Ok((status, body)) => {
                                panic!("push {i} to {repo}: {status} {}", String::from_utf8_lossy(&body))
                            }
                            // The node died under this request.
                            Err(_) if attempt < i + r + 20 => attempt += 1,
                            Err(_) => panic!("push {i} to {repo}: no node answers"),
                        }
                    }
                    acknowledged.lock().unwrap().entry(repo.clone()).or_default().push(digest);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // A third of the way in: SIGKILL the node that delivers.
    wait_for("a third of the pushes", Duration::from_secs(120), || done.load(Ordering::SeqCst) >= PUSHES / 3).await;
    wait_for("a lease holder", Duration::from_secs(10), || receiver.deliveries().len() > 2).await;
    let holder = lease_owner(&database, "acme").await.expect("someone holds the lease");
    let (dead, survivor) = if holder.starts_with("a-") { ("a", "b") } else { ("b", "a") };
    alive.lock().unwrap().retain(|h| *h != host(&nodes, dead));
    nodes.get_mut(dead).unwrap().kill();
    let survivor_host = host(&nodes, survivor);

    // Half-way: the receiver goes down until the subscription reports it failing.
    wait_for("half of the pushes", Duration::from_secs(120), || done.load(Ordering::SeqCst) >= PUSHES / 2).await;
    receiver.down().await;
    let outage = Instant::now();
    // Pushes the endpoint is not there for (the writers may be done by now).
    for seq in 0..5 {
        let body = manifest(&images[REPOS + 1].0, &images[REPOS + 1].1, seq);
        let path = "/v2/acme/outage/manifests/latest";
        let (status, _) =
            request(&survivor_host, "PUT", path, Some("application/vnd.oci.image.manifest.v1+json"), &body);
        assert_eq!(status, 201);
    }
    let status = loop {
        let (code, status) = api(&survivor_host, "GET", "/api/v1/orgs/acme/subscriptions/ci", Value::Null);
        assert_eq!(code, 200, "{status}");
        if status["failing"] == true {
            break status;
        }
        assert!(outage.elapsed() < Duration::from_secs(60), "never reported failing: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{status}");
    assert!(status["backlog"].as_i64() > Some(0), "events wait while the endpoint is down: {status}");
    receiver.up().await;

    for writer in writers {
        writer.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.values().map(Vec::len).sum::<usize>(), PUSHES);

    // Everything arrives: every acknowledged manifest as a manifest.pushed event.
    let all_pushed = |events: &[Value]| {
        let mut pushed: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for e in events.iter().filter(|e| e["type"] == "io.aerugo.manifest.pushed") {
            pushed
                .entry(e["subject"].as_str().unwrap().to_owned())
                .or_default()
                .insert(e["data"]["digest"].as_str().unwrap().to_owned());
        }
        acknowledged
            .iter()
            .all(|(repo, digests)| digests.iter().all(|d| pushed.get(repo).is_some_and(|p| p.contains(d))))
    };
    wait_for("every event", Duration::from_secs(120), || all_pushed(&receiver.events())).await;
    wait_for("a drained backlog", Duration::from_secs(30), || {
        api(&survivor_host, "GET", "/api/v1/orgs/acme/subscriptions/ci", Value::Null).1["backlog"] == 0
    })
    .await;

    let events = receiver.events();
    // Duplicates only as the same event: one id, one content.
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for e in &events {
        let id = e["id"].as_str().unwrap().to_owned();
        if let Some(first) = by_id.get(&id) {
            assert_eq!(first, e, "event {id} arrived twice with different content");
        }
        by_id.insert(id, e.clone());
    }
    // In order per repository: each event is the next of its stream, or one already received.
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut order: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &events {
        let partition = e["partitionkey"].as_str().unwrap().to_owned();
        let seq: u64 = e["sequence"].as_str().unwrap().parse().unwrap();
        let expected = next.entry(partition.clone()).or_insert(0);
        if seq <= *expected {
            continue; // a redelivery (checked above to be the same event)
        }
        assert_eq!(seq, *expected + 1, "{partition}: event {seq} arrived before {}", *expected + 1);
        *expected = seq;
        order.entry(partition).or_default().push(e);
    }
    for (repo, digests) in &acknowledged {
        let stream = &order[repo];
        let pushed: Vec<&str> = stream
            .iter()
            .filter(|e| e["type"] == "io.aerugo.manifest.pushed")
            .map(|e| e["data"]["digest"].as_str().unwrap())
            .collect();
        assert_eq!(pushed, digests.iter().map(String::as_str).collect::<Vec<_>>(), "{repo}: pushes in order");
        let tags: Vec<&str> =
            stream.iter().map(|e| e["type"].as_str().unwrap()).filter(|t| t.starts_with("io.aerugo.tag.")).collect();
        assert_eq!(tags.first(), Some(&"io.aerugo.tag.created"), "{repo}");
        assert_eq!(tags.len(), digests.len(), "{repo}: one tag event per push");
        let last_tag = stream.iter().rev().find(|e| e["type"] == "io.aerugo.tag.moved").unwrap();
        assert_eq!(last_tag["data"]["digest"].as_str(), digests.last().map(String::as_str), "{repo}: latest");
    }
    let unique = by_id.len();
    let duplicates = events.len() - unique;
    eprintln!("{} events received, {unique} unique, {duplicates} redelivered", events.len());

    // Every request is signed; a changed body or another secret does not verify.
    let deliveries = receiver.deliveries();
    for d in &deliveries {
        let signature = d.headers.get("aerugo-signature").expect("signed");
        assert!(signature_valid(SECRET.as_bytes(), signature, &d.body), "signature {signature}");
        assert_eq!(
            d.headers.get("content-type").map(String::as_str),
            Some("application/cloudevents-batch+json; charset=utf-8")
        );
    }
    let d = &deliveries[0];
    let signature = &d.headers["aerugo-signature"];
    let mut tampered = d.body.clone();
    tampered[10] ^= 1;
    assert!(!signature_valid(SECRET.as_bytes(), signature, &tampered), "a changed body is detected");
    assert!(!signature_valid(b"another-secret-entirely", signature, &d.body), "another secret is detected");

    // Tenants are apart: each receiver saw only its organization.
    assert!(events.iter().all(|e| e["source"] == "/orgs/acme"), "acme's receiver saw another organization");
    let other_events = other_receiver.events();
    wait_for("other's events", Duration::from_secs(30), || {
        other_receiver.events().iter().filter(|e| e["type"] == "io.aerugo.manifest.pushed").count() == 20
    })
    .await;
    assert!(other_events.iter().all(|e| e["source"] == "/orgs/other" && e["subject"] == "other/app"));

    // The survivor delivers now.
    let owner = lease_owner(&database, "acme").await.expect("a holder");
    assert!(owner.starts_with(&format!("{survivor}-")), "{owner} holds the lease after {dead} died");

    // The feed lists the same events, newest first, with a cursor.
    let (status, page) = api(&survivor_host, "GET", "/api/v1/orgs/acme/events?limit=5", Value::Null);
    assert_eq!(status, 200);
    let page = page.as_array().unwrap().clone();
    assert_eq!(page.len(), 5);
    let last_id: i64 = page[4]["id"].as_str().unwrap().parse().unwrap();
    let (_, older) =
        api(&survivor_host, "GET", &format!("/api/v1/orgs/acme/events?limit=5&before={last_id}"), Value::Null);
    let first_older: i64 = older[0]["id"].as_str().unwrap().parse().unwrap();
    assert!(first_older < last_id);
    let (status, _) = api(&survivor_host, "GET", "/api/v1/orgs/nobody/events", Value::Null);
    assert_eq!(status, 404);

    // A replay from before the first push delivers every event again, with the same ids.
    let before = receiver.events().len();
    let from = t0.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, _) = api(&survivor_host, "POST", "/api/v1/orgs/acme/subscriptions/ci/replay", json!({ "from": from }));
    assert_eq!(status, 202);
    wait_for("the replay", Duration::from_secs(60), || receiver.events().len() >= before + unique).await;
    let replayed = &receiver.events()[before..];
    assert!(
        replayed.iter().all(|e| by_id.get(e["id"].as_str().unwrap()) == Some(e)),
        "a replay resends the same events"
    );
}
