//! The whole product with no cluster: the API emulator on loopback, the real
//! `aerugo-operator run`, and the data plane the operator declares for the `Registry` of
//! `examples/` — two `aerugo-dataplane` pods run by a stand-in kubelet on the same Postgres and
//! Garage bucket, behind a round-robin "Service". `examples/` is applied as `kubectl apply`
//! would; the keys the operator writes push and pull with skopeo and oras; deletions reclaim
//! data and revoke keys; and the chart's RBAC grants exactly what the operator asked for.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aerugo_e2e::kubelet::Kubelet;
use aerugo_e2e::*;
use aerugo_kube_emulator::Emulator;
use base64::Engine as _;
use serde_json::{Value, json};

/// The User-Agent of the test's own API requests (what a person with kubectl would do), told
/// apart from the operator's in the request record.
const USER: &str = "aerugo-e2e-user";
const SYSTEM: &str = "aerugo-system";

fn s3_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run ./scripts/dev.sh test)"))
}

/// The Helm binary `scripts/dev.sh test` installs (`AERUGO_HELM`), else `helm` on the PATH.
pub fn helm() -> PathBuf {
    std::env::var_os("AERUGO_HELM").map(PathBuf::from).unwrap_or_else(|| "helm".into())
}

/// `helm template` of the chart, as documents.
fn render(args: &[&str]) -> Vec<Value> {
    let out = run(Command::new(helm())
        .args(["template", "aerugo", "charts/aerugo", "--namespace", SYSTEM])
        .args(args)
        .current_dir(repo_root()));
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&out.stdout))
        .expect("rendered YAML")
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// What the chart's ClusterRole (any namespace) and Role (the release namespace) allow, as
/// `(namespace or "*", group, resource[/subresource], verb)`.
fn granted(docs: &[Value]) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for doc in docs {
        let scope = match doc["kind"].as_str() {
            Some("ClusterRole") => "*".to_owned(),
            Some("Role") => doc["metadata"]["namespace"].as_str().unwrap().to_owned(),
            _ => continue,
        };
        for rule in doc["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            scope.clone(),
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The operator's requests as `(namespace, group, resource[/subresource], verb)`.
fn used(emulator: &Emulator) -> BTreeSet<(String, String, String, String)> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() != Some(USER))
        .map(|r| {
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.namespace.unwrap_or_default(), r.group, resource, r.verb.as_str().to_owned())
        })
        .collect()
}

/// Grants a run cannot be expected to use: kube-runtime's event Recorder patches an Event's
/// series when the same Event recurs within minutes, and the operator publishes one only when a
/// failure reason changes, so a short run creates Events without ever extending one.
/// Leases are updated only when the leader renews (every few seconds) or takes over an expired
/// lease; a quick run can end before the first renewal.
const RARELY_USED: &[(&str, &str, &str, &str)] =
    &[("*", "events.k8s.io", "events", "patch"), ("aerugo-system", "coordination.k8s.io", "leases", "update")];

/// Every request allowed; with `exact`, every grant used (but `RARELY_USED`).
fn check_rbac(emulator: &Emulator, docs: &[Value], exact: bool) {
    let granted = granted(docs);
    let used = used(emulator);
    let allows = |(ns, group, resource, verb): &(String, String, String, String)| {
        granted.iter().any(|(scope, g, r, v)| (scope == "*" || scope == ns) && g == group && r == resource && v == verb)
    };
    let denied: Vec<_> = used.iter().filter(|u| !allows(u)).collect();
    assert!(denied.is_empty(), "the chart's RBAC does not allow requests the operator made: {denied:#?}");
    if exact {
        let unused: Vec<_> = granted
            .iter()
            .filter(|(scope, g, r, v)| !RARELY_USED.contains(&(scope.as_str(), g.as_str(), r.as_str(), v.as_str())))
            .filter(|(scope, g, r, v)| {
                !used.iter().any(|(ns, group, resource, verb)| {
                    (scope == "*" || scope == ns) && g == group && r == resource && v == verb
                })
            })
            .collect();
        assert!(unused.is_empty(), "the chart grants what the operator never used: {unused:#?}");
    }
}

/// An API request as a person would make it (told apart from the operator's in the record);
/// a body is a merge patch.
fn api_request(api: &str, method: &str, path: &str, body: Option<&Value>) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api).expect("connect to the emulator");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {api}\r\nUser-Agent: {USER}\r\n\
         Content-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn is_ready(obj: Option<&Value>) -> bool {
    obj.and_then(|o| o["status"]["conditions"].as_array().cloned())
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secret_data(emulator: &Emulator, namespace: &str, name: &str) -> serde_json::Map<String, Value> {
    let secret = emulator.get_raw("v1", "secrets", Some(namespace), name).unwrap_or_else(|| panic!("Secret {name}"));
    secret["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
            (k.clone(), Value::String(String::from_utf8(bytes).unwrap()))
        })
        .collect()
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").env("REGISTRY_AUTH_FILE", "/dev/null/none").args(args).output().expect("skopeo runs")
}

fn oras(user: &str, password: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .env("AERUGO_E2E_USER", user)
        .env("AERUGO_E2E_PASSWORD", password)
        .arg(repo_root().join("e2e/fixtures/oras_client.py"))
        .args(args)
        .output()
        .expect("python3 runs")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `curl` with Basic credentials, returning the status code.
fn curl_status(credentials: &str, method: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", credentials, "-X", method, url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the object `key` exists in the test bucket (a signed HEAD, as S3 clients send).
fn s3_has(bucket: &str, key: &str) -> bool {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-I",
            // Garage wants the payload hash signed (curl 7.88 does not add it): empty payload.
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "--aws-sigv4",
            &format!("aws:amz:{}:s3", s3_env("AERUGO_S3_REGION")),
            "-u",
            &format!("{}:{}", s3_env("AERUGO_S3_ACCESS_KEY_ID"), s3_env("AERUGO_S3_SECRET_ACCESS_KEY")),
            &format!("{}/{bucket}/{key}", s3_env("AERUGO_S3_ENDPOINT")),
        ])
        .output()
        .expect("curl runs");
    match String::from_utf8_lossy(&out.stdout).as_ref() {
        "200" => true,
        "404" => false,
        other => panic!("HEAD {key}: {other} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn examples_through_the_operator_serve_pushes_and_pulls_on_two_nodes() {
    if aerugo_test_support::service_env("AERUGO_TEST_S3").is_none() {
        return;
    }
    let database = fresh_database().await;
    let db = aerugo_db::pool(&database, 2).expect("pool");
    aerugo_db::tenancy::create_user(&db.get().await.expect("db"), "admin", None, None, true, "system")
        .await
        .expect("the organization's owner");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let bucket = format!("aerugo-e2e-{nanos:x}");

    // The "cluster": CRDs, the Secrets a platform team creates by hand, the operator.
    // The CRDs as the chart installs them.
    let chart = render(&[]);
    let emulator = Emulator::new();
    for crd in chart.iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        emulator.install_crd(crd.clone()).expect("the chart's CRD installs");
    }
    let api = emulator.serve().await.expect("loopback");
    let api_host = api.url().trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().expect("tempdir");
    let kubeconfig = work.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (name, data) in [
        ("aerugo-database", json!({ "url": b64(&database) })),
        (
            "aerugo-s3",
            json!({
                "accessKeyId": b64(&s3_env("AERUGO_S3_ACCESS_KEY_ID")),
                "secretAccessKey": b64(&s3_env("AERUGO_S3_SECRET_ACCESS_KEY")),
            }),
        ),
    ] {
        emulator
            .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name, "namespace": SYSTEM }, "data": data }))
            .expect("seed Secret");
    }
    let service = RoundRobin::start().await;
    let s3_secret = work.path().join("s3-secret");
    std::fs::write(&s3_secret, s3_env("AERUGO_S3_SECRET_ACCESS_KEY")).unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let (endpoint, region) = (s3_env("AERUGO_S3_ENDPOINT"), s3_env("AERUGO_S3_REGION"));
    let (key_id, secret_file) = (s3_env("AERUGO_S3_ACCESS_KEY_ID"), s3_secret.display().to_string());
    let _operator = operator_process(
        &kubeconfig,
        &database,
        "aerugo-operator-0",
        &[
            ("AERUGO_REGISTRY_HOST", service.host.as_str()),
            ("AERUGO_OPERATOR_ADMIN_LISTEN", admin.as_str()),
            ("POD_NAMESPACE", SYSTEM),
            ("AERUGO_STORAGE", "s3"),
            ("AERUGO_S3_ENDPOINT", endpoint.as_str()),
            ("AERUGO_S3_REGION", region.as_str()),
            ("AERUGO_S3_BUCKET", bucket.as_str()),
            ("AERUGO_S3_ACCESS_KEY_ID", key_id.as_str()),
            ("AERUGO_S3_SECRET_ACCESS_KEY_FILE", secret_file.as_str()),
            ("AERUGO_S3_PATH_STYLE", "true"),
            ("AERUGO_GC_INTERVAL_SECONDS", "1"),
        ],
    );
    let kubelet = Kubelet::start(emulator.clone(), SYSTEM);

    // `kubectl apply -f examples/`, with the Registry pointed at this machine's Garage.
    let mut objects = Vec::new();
    for file in ["registry.yaml", "acme.yaml"] {
        let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
        for mut doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if doc["kind"] == "Registry" {
                let storage = &mut doc["spec"]["storage"];
                storage["endpoint"] = s3_env("AERUGO_S3_ENDPOINT").into();
                storage["region"] = s3_env("AERUGO_S3_REGION").into();
                storage["bucket"] = bucket.clone().into();
                // Clients reach the pods through the test's Service, not a public host.
                doc["spec"].as_object_mut().unwrap().remove("host");
            }
            let name = doc["metadata"]["name"].as_str().unwrap();
            if doc["kind"] == "Namespace" && emulator.get_raw("v1", "namespaces", None, name).is_some() {
                continue;
            }
            emulator.seed(doc.clone()).expect("apply");
            objects.push(doc);
        }
    }
    // A pull-through mirror of an upstream registry (Distribution with htpasswd on loopback),
    // filling a public organization of its own, with the upstream's login in a Secret.
    let upstream = match aerugo_e2e::distribution::Distribution::start() {
        Ok(d) => d,
        Err(missing) => panic!("{missing} is needed (./scripts/dev.sh test installs it)"),
    };
    let upstream_image = work.path().join("upstream-image");
    let upstream_digest = oci_layout(&upstream_image, "linux/amd64", 100_000, 12);
    upstream.push(&upstream_image, "library/tool:1.0");
    for doc in [
        json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Organization",
                "metadata": { "name": "hub", "namespace": "team" },
                "spec": { "members": [{ "user": "admin", "role": "Owner" }], "defaultVisibility": "Public" } }),
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "hub-login", "namespace": "team" },
                "data": { "username": b64(upstream.user), "password": b64(upstream.password) } }),
        json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Mirror", "metadata": { "name": "hub", "namespace": "team" },
                "spec": { "organizationRef": { "name": "hub" }, "upstream": format!("http://{}", upstream.host),
                          "registryHosts": ["docker.io"], "credentialsSecret": { "name": "hub-login" },
                          "repositories": ["library/*"] } }),
    ] {
        emulator.seed(doc.clone()).expect("apply");
        objects.push(doc);
    }
    // A platform team's webhook: an EventSubscription of the organization, signed with a key of
    // a Secret of the namespace, delivering to a receiver on loopback.
    let receiver = aerugo_e2e::receiver::Receiver::start().await;
    emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "hook", "namespace": "team" },
                      "data": { "secret": b64("the-team-webhook-signing-key") } }))
        .expect("seed Secret");
    let subscription = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "EventSubscription",
        "metadata": { "name": "deploys", "namespace": "team" },
        "spec": { "organizationRef": { "name": "acme" }, "endpoint": receiver.url(),
                  "types": ["ManifestPushed", "TagCreated"], "repositories": ["team/*"],
                  "signingSecret": { "name": "hook" }, "batchSize": 10 },
    });
    emulator.seed(subscription.clone()).expect("apply");
    objects.push(subscription);
    for doc in objects.iter().filter(|d| d["apiVersion"] == "aerugo.io/v1alpha1") {
        let (kind, name) = (doc["kind"].as_str().unwrap(), doc["metadata"]["name"].as_str().unwrap());
        let namespace = doc["metadata"]["namespace"].as_str().unwrap();
        let plural = format!("{}s", kind.to_lowercase())
            .replace("registrys", "registries")
            .replace("repositorys", "repositories");
        eventually(&format!("{kind} {namespace}/{name} Ready"), Duration::from_secs(90), || {
            is_ready(emulator.get_raw("aerugo.io/v1alpha1", &plural, Some(namespace), name).as_ref())
        })
        .await;
    }
    assert!(kubelet.errors().is_empty(), "{:?}", kubelet.errors());
    let nodes = kubelet.pods("aerugo");
    assert_eq!(nodes.len(), 2, "the Registry's two replicas run");
    service.set_backends(nodes.clone());
    // The status counts the second replica at the Registry's next reconcile after the Pod runs.
    eventually("the Registry reports two ready replicas", Duration::from_secs(30), || {
        emulator
            .get_raw("aerugo.io/v1alpha1", "registries", Some(SYSTEM), "aerugo")
            .is_some_and(|r| r["status"]["readyReplicas"] == 2)
    })
    .await;

    // The keys, read from the Secrets the operator wrote.
    let push = secret_data(&emulator, "team", "ci-push");
    let push_creds = format!("{}:{}", push["username"].as_str().unwrap(), push["apiKey"].as_str().unwrap());
    let pull = secret_data(&emulator, "team", "acme-pull");
    let config: Value = serde_json::from_str(pull[".dockerconfigjson"].as_str().unwrap()).unwrap();
    let entry = &config["auths"][&service.host];
    assert!(entry.is_object(), "the pull Secret names the registry host: {config}");
    let pull_auth = work.path().join("pull.json");
    std::fs::write(&pull_auth, pull[".dockerconfigjson"].as_str().unwrap()).unwrap();
    let pull_auth = pull_auth.to_str().unwrap().to_owned();
    let pull_creds = format!("{}:{}", entry["username"].as_str().unwrap(), entry["password"].as_str().unwrap());

    // Push with skopeo and oras using the CI key, through the Service (round robin: the
    // requests of one push land on both nodes).
    let image = work.path().join("image");
    oci_layout(&image, "linux/amd64", 200_000, 11);
    let layout = format!("oci:{}:latest", image.display());
    let app = format!("docker://{}/acme/team/app:v1", service.host);
    ok(skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &push_creds, &layout, &app]), "skopeo push, CI key");
    let shared = format!("docker://{}/acme/tools:shared", service.host);
    ok(
        skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &push_creds, &layout, &shared]),
        "same image into tools",
    );
    // The push reached the subscription (from whichever pod holds its lease); acme/tools is
    // outside its repositories.
    eventually("the push's events at the receiver", Duration::from_secs(30), || {
        receiver.events().iter().any(|e| e["type"] == "io.aerugo.tag.created" && e["data"]["tag"] == "v1")
    })
    .await;
    let events = receiver.events();
    assert!(events.iter().all(|e| e["subject"] == "acme/team/app"), "only team/* repositories: {events:?}");
    assert!(events.iter().any(|e| e["type"] == "io.aerugo.manifest.pushed"));
    assert!(receiver.deliveries().iter().all(|d| d.headers.contains_key("aerugo-signature")), "signed");
    let artifact = work.path().join("report.txt");
    std::fs::write(&artifact, "a report only acme/tools holds\n".repeat(500)).unwrap();
    let (user, key) = push_creds.split_once(':').unwrap();
    ok(oras(user, key, &["push", &service.host, "acme/tools:report", artifact.to_str().unwrap()]), "oras push, CI key");

    // Pull with the cluster key (an imagePullSecrets entry), with skopeo and oras.
    let pulled = format!("oci:{}:pulled", work.path().join("pulled").display());
    ok(
        skopeo(&["copy", "--src-tls-verify=false", "--src-authfile", &pull_auth, &app, &pulled]),
        "skopeo pull, cluster key",
    );
    let (user, key) = pull_creds.split_once(':').unwrap();
    let out = work.path().join("oras-out");
    ok(oras(user, key, &["pull", &service.host, "acme/tools:report", out.to_str().unwrap()]), "oras pull, cluster key");
    assert_eq!(std::fs::read(out.join("report.txt")).unwrap(), std::fs::read(&artifact).unwrap());
    // A push with the pull key is refused.
    let refused = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-authfile",
        &pull_auth,
        &layout,
        &app.replace(":v1", ":pull-key"),
    ]);
    assert!(!refused.status.success(), "a pull key must not push");

    // Through the Mirror, anonymously (its organization is public), on both pods: the
    // upstream's image, fetched from the upstream once per blob.
    // Each pod reads the mirrors every 2 s: Ready on the object precedes that by up to 2 s.
    for node in &nodes {
        eventually("the pods serve the Mirror", Duration::from_secs(10), || {
            http_status(node, "HEAD", "/v2/hub/library/tool/manifests/1.0") == Some(200)
        })
        .await;
    }
    let mirrored = format!("docker://{}/hub/library/tool:1.0", service.host);
    for i in 0..2 {
        let into = format!("oci:{}:m", work.path().join(format!("mirrored{i}")).display());
        ok(
            skopeo(&["copy", "--src-tls-verify=false", "--src-no-creds", &mirrored, &into]),
            "skopeo pull through the Mirror",
        );
    }
    let inspect = skopeo(&["inspect", "--tls-verify=false", "--no-creds", "--raw", &mirrored]);
    assert!(inspect.status.success(), "inspect through the Mirror: {}", String::from_utf8_lossy(&inspect.stderr));
    assert_eq!(sha256_digest(&inspect.stdout), upstream_digest, "the upstream's manifest, byte for byte");
    let fetched: Vec<String> = upstream
        .access_log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/library/tool/blobs/") && l.contains("\" 200 "))
        .map(str::to_owned)
        .collect();
    assert_eq!(fetched.len(), 2, "config and layer fetched once each: {fetched:#?}");

    // An upload started on one node is finished on the other.
    let (a, b) = (&nodes[0], &nodes[1]);
    let blob: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let digest = upload_across(&push_creds, [a, a, b], "acme/team/app", &blob, 5_500_000);
    let fetched = run(Command::new("curl").args([
        "-sSfL",
        "-u",
        &pull_creds,
        &format!("http://{a}/v2/acme/team/app/blobs/{digest}"),
    ]));
    assert_eq!(fetched.stdout, blob, "the blob finished on node b reads back whole from node a");

    // A push on one node is visible on the other at once.
    let other = work.path().join("other");
    oci_layout(&other, "linux/amd64", 50_000, 12);
    let digest_file = work.path().join("latest.digest");
    ok(
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &push_creds,
            "--digestfile",
            digest_file.to_str().unwrap(),
            &format!("oci:{}:latest", other.display()),
            &format!("docker://{a}/acme/team/app:latest"),
        ]),
        "push to node a",
    );
    let latest = std::fs::read_to_string(&digest_file).unwrap();
    let seen = ok(
        skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &pull_creds,
            "--format",
            "{{.Digest}}",
            &format!("docker://{b}/acme/team/app:latest"),
        ]),
        "inspect on node b",
    );
    assert_eq!(latest.trim(), seen, "node b serves the digest node a just acknowledged");

    // Delete the Repository with reclaimPolicy Delete: its tags and manifests go, and the
    // blobs no other repository shares leave S3 (once the collector's review delay passes).
    let client = db.get().await.expect("db");
    let blob_keys = |repo: &'static str| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT b.digest, b.storage_key FROM blob_objects b JOIN repository_blobs rb ON rb.digest = b.digest
                       JOIN repositories r ON r.id = rb.repository_id WHERE r.name = $1",
                    &[&repo],
                )
                .await
                .expect("query")
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>()
        }
    };
    let tools_blobs = blob_keys("acme/tools").await;
    let app_digests: BTreeSet<String> = blob_keys("acme/team/app").await.into_iter().map(|(d, _)| d).collect();
    let (kept, unshared): (Vec<_>, Vec<_>) = tools_blobs.into_iter().partition(|(d, _)| app_digests.contains(d));
    assert!(!kept.is_empty() && !unshared.is_empty(), "tools shares the image's blobs and holds the report alone");
    for (_, key) in kept.iter().chain(&unshared) {
        assert!(s3_has(&bucket, key), "{key} is in S3 before the delete");
    }
    assert_eq!(
        api_request(&api_host, "DELETE", "/apis/aerugo.io/v1alpha1/namespaces/team/repositories/tools", None),
        200
    );
    eventually("the Repository to go", Duration::from_secs(30), || {
        emulator.get_raw("aerugo.io/v1alpha1", "repositories", Some("team"), "tools").is_none()
    })
    .await;
    let gone = curl_status(&push_creds, "GET", &format!("http://{}/v2/acme/tools/tags/list", service.host));
    assert_eq!(gone, "404", "the repository's tags are gone");
    let manifests: i64 = client
        .query_one("SELECT count(*) FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE r.name = 'acme/tools'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(manifests, 0);
    // A day passes for the collector's review queue.
    client.execute("UPDATE gc_blob_review_queue SET review_after = now()", &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while unshared.iter().any(|(_, key)| s3_has(&bucket, key)) {
        assert!(Instant::now() < deadline, "the unshared blobs never left S3");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (_, key) in &kept {
        assert!(s3_has(&bucket, key), "{key}, still used by acme/team/app, stays");
    }
    ok(skopeo(&["copy", "--src-tls-verify=false", "--src-authfile", &pull_auth, &app, &pulled]), "app still pulls");

    // Delete the ApiKey: its key is rejected at once, its Secret goes.
    let base = format!("http://{}/v2/acme/team/app/tags/list", service.host);
    assert_eq!(curl_status(&push_creds, "GET", &base), "200");
    assert_eq!(api_request(&api_host, "DELETE", "/apis/aerugo.io/v1alpha1/namespaces/team/apikeys/ci-push", None), 200);
    eventually("the ApiKey to go", Duration::from_secs(30), || {
        emulator.get_raw("aerugo.io/v1alpha1", "apikeys", Some("team"), "ci-push").is_none()
    })
    .await;
    // Nodes reload revoked keys every --revocation-refresh seconds (5): the bound on "at once".
    let revoked = Instant::now();
    eventually("the deleted key rejected on every node", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| curl_status(&push_creds, "GET", &format!("http://{n}/v2/acme/team/app/tags/list")) == "401")
    })
    .await;
    eprintln!("a deleted ApiKey was rejected by both nodes {:?} after its object went", revoked.elapsed());
    assert!(emulator.get_raw("v1", "secrets", Some("team"), "ci-push").is_none());

    // A reference across the tenant boundary is refused with a condition and an Event.
    emulator
        .seed(json!({
            "apiVersion": "aerugo.io/v1alpha1", "kind": "Repository",
            "metadata": { "name": "intruder", "namespace": "other" },
            "spec": { "organizationRef": { "name": "acme" } },
        }))
        .expect("seed");
    eventually("the intruder refused", Duration::from_secs(30), || {
        emulator
            .get_raw("aerugo.io/v1alpha1", "repositories", Some("other"), "intruder")
            .and_then(|r| r["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "False"))
    })
    .await;
    eventually("an Event about the refusal", Duration::from_secs(30), || {
        !emulator.list_raw("events.k8s.io/v1", "events", Some("other")).is_empty()
    })
    .await;
    // Autoscaling on: the operator hands the replica count to an HorizontalPodAutoscaler.
    let autoscale = json!({ "spec": { "autoscaling": { "minReplicas": 2, "maxReplicas": 4 } } });
    let path = "/apis/aerugo.io/v1alpha1/namespaces/aerugo-system/registries/aerugo";
    assert_eq!(api_request(&api_host, "PATCH", path, Some(&autoscale)), 200);
    eventually("the HPA", Duration::from_secs(30), || {
        emulator.get_raw("autoscaling/v2", "horizontalpodautoscalers", Some(SYSTEM), "aerugo").is_some()
    })
    .await;

    // The chart's RBAC is exactly what the operator used.
    check_rbac(&emulator, &chart, true);
}

/// The chart's default Registry (`registry.create`): the operator, configured as the chart's
/// Deployment configures it, applies the Registry from the chart's ConfigMap, owned by that
/// ConfigMap, within the chart's RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_default_registry_is_applied_by_the_operator() {
    let chart = render(&["-f", "charts/aerugo/ci/full-values.yaml", "--set", "storage.endpoint=http://127.0.0.1:9"]);
    let find = |kind: &str, suffix: &str| {
        chart
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {kind} *{suffix} in the render"))
            .clone()
    };
    let configmap = find("ConfigMap", "-default-registry");
    let deployment = find("Deployment", "-operator");
    let env: std::collections::BTreeMap<String, String> =
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
            .collect();
    assert_eq!(env["AERUGO_DEFAULT_REGISTRY_CONFIGMAP"], configmap["metadata"]["name"].as_str().unwrap());
    assert_eq!(env["AERUGO_REGISTRY_HOST"], "registry.example.com");

    let emulator = Emulator::new();
    for crd in chart.iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
        emulator.install_crd(crd.clone()).expect("CRD");
    }
    let stored = emulator.seed(configmap.clone()).expect("the release's ConfigMap");
    let api = emulator.serve().await.expect("loopback");
    let work = tempfile::tempdir().expect("tempdir");
    let kubeconfig = work.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    // The ConfigMap volume, as the kubelet mounts it.
    let file = work.path().join("registry.yaml");
    std::fs::write(&file, configmap["data"]["registry.yaml"].as_str().unwrap()).unwrap();
    let database = fresh_database().await;
    let file_env = file.display().to_string();
    let _operator = operator_process(
        &kubeconfig,
        &database,
        "aerugo-operator-0",
        &[
            ("POD_NAMESPACE", SYSTEM),
            ("AERUGO_DEFAULT_REGISTRY_FILE", file_env.as_str()),
            ("AERUGO_DEFAULT_REGISTRY_CONFIGMAP", env["AERUGO_DEFAULT_REGISTRY_CONFIGMAP"].as_str()),
        ],
    );
    eventually("the default Registry", Duration::from_secs(30), || {
        emulator.get_raw("aerugo.io/v1alpha1", "registries", Some(SYSTEM), "main").is_some()
    })
    .await;
    let registry = emulator.get_raw("aerugo.io/v1alpha1", "registries", Some(SYSTEM), "main").unwrap();
    assert_eq!(registry["metadata"]["ownerReferences"][0]["uid"], stored["metadata"]["uid"]);
    assert_eq!(registry["spec"]["replicas"], 3);
    assert_eq!(registry["spec"]["autoscaling"]["maxReplicas"], 12);
    assert_eq!(registry["spec"]["storage"]["redirect"], "Proxy");
    // The operator then reconciles it: waiting for its S3 credentials Secret, which the
    // release expects the user to create.
    eventually("the Registry's condition", Duration::from_secs(30), || {
        emulator
            .get_raw("aerugo.io/v1alpha1", "registries", Some(SYSTEM), "main")
            .and_then(|r| r["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["reason"] == "CredentialsNotFound"))
    })
    .await;
    check_rbac(&emulator, &chart, false);
}
