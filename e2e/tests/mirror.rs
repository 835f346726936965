//! Pull-through mirrors against a real upstream on loopback: CNCF Distribution (Debian's
//! `docker-registry`, htpasswd) or a second Aerugo (the Bearer token flow). Clients are real:
//! skopeo for the prefixed names, containerd's resolver (`ctr --hosts-dir`, `?ns=`) for the
//! transparent ones. The upstream's access log counts what the mirror fetched.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aerugo_db::mirrors::{self, MirrorSpec};
use aerugo_e2e::distribution::Distribution;
use aerugo_e2e::*;

fn distribution() -> Option<Distribution> {
    match Distribution::start() {
        Ok(d) => Some(d),
        Err(missing) => {
            aerugo_test_support::skip(&missing);
            None
        }
    }
}

/// What a mirror declares in a test.
struct Declare<'a> {
    org: &'a str,
    upstream: String,
    hosts: &'a [&'a str],
    credentials: Option<(&'a str, &'a str)>,
    stale_after_seconds: i64,
    max_bytes: Option<i64>,
    repositories: &'a [&'a str],
}

/// Sets the storage quota of organization `org`.
async fn set_quota(database: &str, org: &str, bytes: i64) {
    let db = aerugo_db::pool(database, 1).expect("pool");
    let client = db.get().await.expect("database");
    client.execute("UPDATE organizations SET quota_bytes = $2 WHERE name = $1", &[&org, &bytes]).await.expect("quota");
}

impl Declare<'_> {
    /// Creates the (public) organization if missing and writes the mirror row, as the operator
    /// does for a Mirror object.
    async fn write(&self, database: &str) {
        let db = aerugo_db::pool(database, 1).expect("pool");
        let client = db.get().await.expect("database");
        let row = client
            .query_one(
                "INSERT INTO organizations (name, default_visibility) VALUES ($1, 'public')
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                &[&self.org],
            )
            .await
            .expect("organization");
        let hosts: Vec<String> = self.hosts.iter().map(|h| (*h).to_owned()).collect();
        let repositories: Vec<String> = self.repositories.iter().map(|h| (*h).to_owned()).collect();
        let spec = MirrorSpec {
            upstream: &self.upstream,
            registry_hosts: &hosts,
            credentials: self.credentials,
            repositories: &repositories,
            stale_after_seconds: self.stale_after_seconds,
            serve_stale_on_error: true,
            max_bytes: self.max_bytes,
        };
        spec.check().expect("valid spec");
        // One object per organization in these tests: its UID derives from the name.
        let uid = uuid_of(self.org);
        let declared = mirrors::declare(&client, uid, "default", row.get(0), self.org, &spec).await.expect("declare");
        assert!(matches!(declared, mirrors::Declared::Owned(_)), "{declared:?}");
    }
}

fn uuid_of(name: &str) -> uuid::Uuid {
    let hash = sha256_digest(name.as_bytes());
    let hex = &hash["sha256:".len()..];
    format!("{}-{}-4{}-8{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32]).parse().expect("uuid")
}

/// skopeo copy of `reference` on `host` into a directory (every blob read), as the
/// administrator; returns whether it succeeded and what it printed.
fn pull(server: &Server, reference: &str, into: &Path) -> (bool, String) {
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &server.auth_file)
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{reference}", server.host))
        .arg(format!("dir:{}", into.display()))
        .output()
        .expect("skopeo");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The digest of `reference` as skopeo resolves it on `host`.
fn digest_of(server: &Server, reference: &str) -> String {
    let out =
        server.skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{}/{reference}", server.host)]);
    sha256_digest(&out.stdout)
}

/// The blobs of an OCI layout (config and layers of every manifest).
fn layout_blobs(layout: &Path) -> Vec<String> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).expect("blobs") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(&name)).expect("blob");
        // Manifests and indexes are JSON with a mediaType; blobs are everything else.
        let is_manifest = serde_json::from_slice::<serde_json::Value>(&bytes)
            .is_ok_and(|v| v.get("layers").is_some() || v.get("manifests").is_some());
        if !is_manifest {
            blobs.push(format!("sha256:{name}"));
        }
    }
    blobs
}

fn metric(admin: &str, name: &str) -> f64 {
    let text = http_raw(admin, "GET", "/metrics").expect("metrics");
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// 20 concurrent cold pulls of a 50 MiB image through two nodes fetch each blob from the
/// upstream exactly once; the digests are the upstream's; containerd pulls the same image by
/// its upstream name with `hosts.toml` (`?ns=docker.io`); pushes into the mirror are refused.
#[tokio::test]
async fn one_upstream_fetch_per_blob_across_two_nodes_and_containerd_pulls_by_upstream_name() {
    let Some(_) = aerugo_test_support::service_env("AERUGO_TEST_S3") else { return };
    let Some(upstream) = distribution() else { return };
    let layout = upstream.dir().join("big");
    let digest = oci_layout(&layout, "linux/amd64", 50 << 20, 71);
    upstream.push(&layout, "library/alpine:3.20");
    let database = fresh_database().await;
    Declare {
        org: "hub",
        upstream: format!("http://{}", upstream.host),
        hosts: &["docker.io"],
        credentials: Some((upstream.user, upstream.password)),
        stale_after_seconds: 600,
        max_bytes: None,
        repositories: &["library/*"],
    }
    .write(&database)
    .await;
    let a = Server::start(&database, Storage::S3);
    let b = Server::start_next_to(&a, &database, Storage::S3);

    let work = tempfile::tempdir().expect("tempdir");
    let pulls: Vec<_> = (0..20)
        .map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            let (auth, host, dir) = (node.auth_file.clone(), node.host.clone(), work.path().join(format!("p{i}")));
            std::thread::spawn(move || {
                Command::new("skopeo")
                    .env("REGISTRY_AUTH_FILE", auth)
                    .args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://{host}/hub/library/alpine:3.20"))
                    .arg(format!("dir:{}", dir.display()))
                    .output()
                    .expect("skopeo")
            })
        })
        .collect();
    for (i, pull) in pulls.into_iter().enumerate() {
        let out = pull.join().expect("thread");
        assert!(out.status.success(), "pull {i}: {}", String::from_utf8_lossy(&out.stderr));
        let manifest = std::fs::read(work.path().join(format!("p{i}/manifest.json"))).expect("manifest");
        assert_eq!(sha256_digest(&manifest), digest, "pull {i} got the upstream's manifest");
    }
    for blob in layout_blobs(&layout) {
        let fetched = upstream.gets(&format!("/v2/library/alpine/blobs/{blob}"));
        assert_eq!(fetched, 1, "blob {blob} was fetched {fetched} times for 20 pulls through two nodes");
    }
    let layer = std::fs::read_dir(work.path().join("p7")).expect("pulled").count();
    assert!(layer >= 3, "manifest, config and layer pulled");
    let hits = metric(&a.admin, "aerugo_mirror_pulls_total") + metric(&b.admin, "aerugo_mirror_pulls_total");
    assert!(hits >= 60.0, "every manifest and blob pull counted: {hits}");
    assert!(
        metric(&a.admin, "aerugo_mirror_upstream_bytes_total") + metric(&b.admin, "aerugo_mirror_upstream_bytes_total")
            >= (50u64 << 20) as f64
    );

    // Outside the patterns: not fetched.
    let (ok, err) = pull(&a, "hub/other/app:v1", &work.path().join("other"));
    assert!(!ok && err.contains("unknown"), "{err}");
    // A mirror is filled by pulls only.
    let push = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &a.auth_file)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/hub/library/alpine:mine", a.host))
        .output()
        .expect("skopeo");
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success() && err.contains("denied"), "{err}");
    let manifest = std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).expect("manifest");
    let (status, body) = request(
        &a.host,
        "PUT",
        "/v2/hub/library/alpine/manifests/mine",
        Some("application/vnd.oci.image.manifest.v1+json"),
        &manifest,
    );
    let body = String::from_utf8_lossy(&body);
    assert!(status == 403 && body.contains("is a pull-through mirror"), "{status} {body}");

    // containerd, with Aerugo as docker.io's mirror in hosts.toml: no prefix in the name.
    let containerd = match aerugo_e2e::containerd::Containerd::start() {
        Ok(c) => c,
        Err(missing) => {
            aerugo_test_support::skip(&missing);
            return;
        }
    };
    let hosts = work.path().join("hosts");
    std::fs::create_dir_all(hosts.join("docker.io")).expect("hosts dir");
    // The fallback `server` is a closed loopback port: nothing leaves the machine.
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:9\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            b.host
        ),
    )
    .expect("hosts.toml");
    let hosts_dir = hosts.display().to_string();
    let fetched = containerd.ctr_output(&[
        "content",
        "fetch",
        "--hosts-dir",
        &hosts_dir,
        "--http-dump",
        "docker.io/library/alpine:3.20",
    ]);
    let dump = String::from_utf8_lossy(&fetched.stderr).into_owned() + &String::from_utf8_lossy(&fetched.stdout);
    assert!(fetched.status.success(), "ctr fetch through the mirror failed:\n{dump}");
    assert!(dump.contains("ns=docker.io"), "containerd named the upstream registry:\n{dump}");
    let images = containerd.ctr(&["images", "ls"]);
    assert!(images.contains("docker.io/library/alpine:3.20") && images.contains(&digest), "{images}");
    for blob in layout_blobs(&layout) {
        assert_eq!(upstream.gets(&format!("/v2/library/alpine/blobs/{blob}")), 1, "served from the mirror");
    }
}

/// With the upstream stopped, cached images still pull (every time) and the staleness is
/// counted; an uncached one fails with a clear error. With the upstream back, a tag moved
/// there is seen once `staleAfter` passed.
#[tokio::test]
async fn upstream_outage_serves_cached_images_and_a_moved_tag_is_seen_after_stale_after() {
    let Some(mut upstream) = distribution() else { return };
    let first = upstream.dir().join("first");
    let first_digest = oci_layout(&first, "linux/amd64,linux/arm64", 20_000, 72);
    upstream.push(&first, "team/app:v1");
    upstream.push(&first, "team/other:v1");
    let database = fresh_database().await;
    Declare {
        org: "quay",
        upstream: format!("http://{}", upstream.host),
        hosts: &[],
        credentials: Some((upstream.user, upstream.password)),
        stale_after_seconds: 2,
        max_bytes: None,
        repositories: &[],
    }
    .write(&database)
    .await;
    let node = Server::start(&database, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let (ok, err) = pull(&node, "quay/team/app:v1", &work.path().join("warm"));
    assert!(ok, "{err}");
    assert_eq!(digest_of(&node, "quay/team/app:v1"), first_digest, "the index, as the upstream has it");

    upstream.down();
    std::thread::sleep(Duration::from_millis(2100));
    for i in 0..10 {
        let (ok, err) = pull(&node, "quay/team/app:v1", &work.path().join(format!("down{i}")));
        assert!(ok, "cached pull {i} with the upstream down: {err}");
    }
    assert!(metric(&node.admin, "aerugo_mirror_stale_serves_total") >= 1.0, "stale serves are counted");
    let (ok, err) = pull(&node, "quay/team/other:v1", &work.path().join("uncached"));
    assert!(!ok, "an uncached image cannot be served with the upstream down");
    let answer = node.http_as_admin("GET", "/v2/quay/team/other/manifests/v1").expect("answer");
    assert!(
        answer.contains(" 503 ") && answer.contains("is not cached and the upstream of mirror quay is unavailable"),
        "{answer}\n{err}"
    );

    upstream.up();
    let second = upstream.dir().join("second");
    let second_digest = oci_layout(&second, "linux/amd64", 20_000, 73);
    upstream.push(&second, "team/app:v1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while digest_of(&node, "quay/team/app:v1") != second_digest {
        assert!(Instant::now() < deadline, "the moved tag was not seen after staleAfter");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (ok, err) = pull(&node, "quay/team/app:v1", &work.path().join("moved"));
    assert!(ok, "{err}");
}

/// Past the byte cap, the least recently pulled image goes first: with A, B pulled, A pulled
/// again and C pulled, B is evicted and A and C stay (checked with the upstream down).
#[tokio::test]
async fn the_byte_cap_evicts_the_least_recently_pulled_image() {
    let Some(mut upstream) = distribution() else { return };
    let mut layouts = Vec::new();
    for (name, seed) in [("a", 81), ("b", 82), ("c", 83)] {
        let dir = upstream.dir().join(name);
        oci_layout(&dir, "linux/amd64", 1 << 20, seed);
        upstream.push(&dir, &format!("lib/{name}:v1"));
        layouts.push(dir);
    }
    let database = fresh_database().await;
    Declare {
        org: "cap",
        upstream: format!("http://{}", upstream.host),
        hosts: &[],
        credentials: Some((upstream.user, upstream.password)),
        stale_after_seconds: 3600,
        // Two images of a little over 1 MiB fit; three do not.
        max_bytes: Some((5 << 20) / 2),
        repositories: &[],
    }
    .write(&database)
    .await;
    let node = Server::start(&database, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    for step in ["a", "b"] {
        let (ok, err) = pull(&node, &format!("cap/lib/{step}:v1"), &work.path().join(step));
        assert!(ok, "{err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, err) = pull(&node, "cap/lib/a:v1", &work.path().join("a-again"));
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(50));
    let (ok, err) = pull(&node, "cap/lib/c:v1", &work.path().join("c"));
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&node.admin, "aerugo_mirror_evictions_total") < 1.0 {
        assert!(Instant::now() < deadline, "nothing was evicted past the cap");
        std::thread::sleep(Duration::from_millis(100));
    }
    upstream.down();
    for kept in ["a", "c"] {
        let (ok, err) = pull(&node, &format!("cap/lib/{kept}:v1"), &work.path().join(format!("{kept}-kept")));
        assert!(ok, "{kept} was pulled more recently than b and stays: {err}");
    }
    let (ok, _) = pull(&node, "cap/lib/b:v1", &work.path().join("b-gone"));
    assert!(!ok, "b, the least recently pulled, was evicted");
}

/// An upstream with the Bearer token flow (a second Aerugo, private repository): without
/// credentials the mirror cannot fetch even for a client that is an administrator of both
/// (the client's credentials never reach the upstream); with the Mirror's credentials it can.
#[tokio::test]
async fn bearer_token_upstreams_get_the_mirror_credentials_never_the_client_ones() {
    let upstream = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let digest = oci_layout(&layout, "linux/amd64", 30_000, 91);
    upstream.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{}/corp/app:v1", upstream.host),
    ]);
    let database = fresh_database().await;
    let declare = |credentials| Declare {
        org: "up",
        upstream: format!("http://{}", upstream.host),
        hosts: &[],
        credentials,
        stale_after_seconds: 600,
        max_bytes: None,
        repositories: &[],
    };
    declare(None).write(&database).await;
    let node = Server::start(&database, Storage::File);
    let (ok, err) = pull(&node, "up/corp/app:v1", &work.path().join("anonymous"));
    assert!(!ok, "the client's administrator credentials must not reach the upstream");
    let answer = node.http_as_admin("GET", "/v2/up/corp/app/manifests/v1").expect("answer");
    assert!(
        answer.contains(" 503 ") && answer.contains("could not be mirrored: the upstream of mirror up refused it"),
        "{answer}\n{err}"
    );

    declare(Some((ADMIN_USER, ADMIN_PASSWORD))).write(&database).await;
    std::thread::sleep(Duration::from_millis(2500));
    let (ok, err) = pull(&node, "up/corp/app:v1", &work.path().join("credentials"));
    assert!(ok, "{err}");
    assert_eq!(digest_of(&node, "up/corp/app:v1"), digest);
}

/// What a mirror stores counts against its organization's quota: a fetch past it is refused
/// with `DENIED` naming the quota, and nothing of the refused blob is kept.
#[tokio::test]
async fn mirrored_content_counts_against_the_organization_quota() {
    let Some(upstream) = distribution() else { return };
    let small = upstream.dir().join("small");
    oci_layout(&small, "linux/amd64", 10_000, 95);
    upstream.push(&small, "lib/small:v1");
    let big = upstream.dir().join("big");
    oci_layout(&big, "linux/amd64", 2 << 20, 96);
    upstream.push(&big, "lib/big:v1");
    let database = fresh_database().await;
    Declare {
        org: "quota",
        upstream: format!("http://{}", upstream.host),
        hosts: &[],
        credentials: Some((upstream.user, upstream.password)),
        stale_after_seconds: 600,
        max_bytes: None,
        repositories: &[],
    }
    .write(&database)
    .await;
    set_quota(&database, "quota", 1 << 20).await;
    let node = Server::start(&database, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let (ok, err) = pull(&node, "quota/lib/small:v1", &work.path().join("small"));
    assert!(ok, "under the quota: {err}");
    let (ok, err) = pull(&node, "quota/lib/big:v1", &work.path().join("big"));
    assert!(!ok && err.contains("403"), "a 2 MiB layer past a 1 MiB quota is refused: {err}");
    let manifest = node.raw_manifest("quota/lib/big:v1");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer digest");
    let answer = node.http_as_admin("GET", &format!("/v2/quota/lib/big/blobs/{layer}")).expect("answer");
    assert!(answer.contains(" 403 ") && answer.contains("storage quota"), "{answer}");
    let db = aerugo_db::pool(&database, 1).expect("pool");
    let client = db.get().await.expect("database");
    let used: i64 = client
        .query_one(
            "SELECT COALESCE(sum(b.size), 0)::bigint FROM blobs b WHERE b.digest IN
               (SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                 JOIN organizations o ON o.id = r.org_id WHERE o.name = 'quota')",
            &[],
        )
        .await
        .expect("usage")
        .get(0);
    assert!(used < 1 << 20, "the refused layer is not linked: {used} bytes held");
}
