//! The operator's file mode on `examples/` against a real data plane: the keys it writes push
//! and pull with skopeo, each only as far as its scopes allow, and immutable tags hold.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::Command;

use aerugo_e2e::*;
use base64::Engine as _;
use serde_json::Value;

fn secret_data(path: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let secret: Value = serde_saphyr::from_str(&text).expect("a Secret manifest");
    assert_eq!(secret["kind"], "Secret");
    secret["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64")).expect("base64");
            (k.clone(), Value::String(String::from_utf8(bytes).expect("utf-8")))
        })
        .collect()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").env("REGISTRY_AUTH_FILE", "/dev/null/none").args(args).output().expect("skopeo runs")
}

#[tokio::test]
async fn example_keys_push_and_pull_with_skopeo() {
    let database = fresh_database().await;
    let server = Server::start(&database, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = work.path().join("secrets");
    let examples = repo_root().join("examples");
    let out = run(Command::new(operator_bin())
        .arg("apply")
        .arg("-f")
        .arg(&examples)
        .arg("--secrets-dir")
        .arg(&secrets)
        .env("AERUGO_DATABASE_URL", &database)
        .env("AERUGO_REGISTRY_HOST", &server.host)
        .env("RUST_LOG", "warn"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.matches("Ready=True").count(), 6, "{report}");

    let push = secret_data(&secrets.join("team/ci-push.yaml"));
    let (user, key) = (push["username"].as_str().unwrap(), push["apiKey"].as_str().unwrap());
    assert_eq!(user, "acme");
    assert_eq!(push["registry"], server.host.as_str());
    let creds = format!("{user}:{key}");
    let pull = secret_data(&secrets.join("team/acme-pull.yaml"));
    let pull_auth = work.path().join("pull.json");
    std::fs::write(&pull_auth, pull[".dockerconfigjson"].as_str().unwrap()).expect("auth file");
    let pull_auth = pull_auth.to_str().unwrap().to_owned();

    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 30_000, 5);
    let layout = format!("oci:{}:latest", src.display());
    let app = format!("docker://{}/acme/team/app:v1", server.host);
    let pushed = skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &layout, &app]);
    assert!(pushed.status.success(), "push with the CI key: {}", String::from_utf8_lossy(&pushed.stderr));

    // The cluster's pull Secret pulls, as an imagePullSecrets entry would.
    let dest = format!("oci:{}:pulled", work.path().join("dest").display());
    let pulled = skopeo(&["copy", "--src-tls-verify=false", "--src-authfile", &pull_auth, &app, &dest]);
    assert!(pulled.status.success(), "pull with the pull Secret: {}", String::from_utf8_lossy(&pulled.stderr));
    // … and cannot push.
    let tools = format!("docker://{}/acme/tools:v1", server.host);
    let refused = skopeo(&["copy", "--dest-tls-verify=false", "--dest-authfile", &pull_auth, &layout, &tools]);
    assert!(!refused.status.success(), "a pull key must not push");
    // Without credentials a private repository is closed.
    let anonymous = skopeo(&["inspect", "--tls-verify=false", "--no-creds", &app]);
    assert!(!anonymous.status.success());

    // v* tags are immutable in acme/team/app: another image under v1 is refused.
    let other = work.path().join("other");
    oci_layout(&other, "linux/amd64", 30_000, 6);
    let other_layout = format!("oci:{}:latest", other.display());
    let moved = skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &other_layout, &app]);
    assert!(!moved.status.success(), "an immutable tag must not move");
    let message = String::from_utf8_lossy(&moved.stderr);
    assert!(message.contains("immutable"), "the refusal says why: {message}");
    let latest = format!("docker://{}/acme/team/app:latest", server.host);
    let ok = skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &other_layout, &latest]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

/// The real `aerugo-operator run` binary, with a kubeconfig pointing at the emulator's loopback
/// server: it takes the Lease, serves metrics, and reconciles `examples/` to Ready.
#[tokio::test]
async fn the_operator_binary_reconciles_examples_through_a_kubeconfig() {
    let database = database_with_admin().await;
    let cluster = EmulatedCluster::start().await;
    let (emulator, kubeconfig) = (&cluster.emulator, &cluster.kubeconfig);
    let root = repo_root();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let _operator =
        operator_process(kubeconfig, &database, "operator-0", &[("AERUGO_OPERATOR_ADMIN_LISTEN", admin.as_str())]);

    let text = std::fs::read_to_string(root.join("examples/acme.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    for doc in &docs {
        emulator.seed(doc.clone()).expect("seed");
    }
    let ready = |o: Option<&Value>| {
        o.and_then(|o| o["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for doc in docs.iter().filter(|d| d["apiVersion"] == "aerugo.io/v1alpha1") {
        let plural = match doc["kind"].as_str().unwrap() {
            "Organization" => "organizations",
            "Repository" => "repositories",
            _ => "apikeys",
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        while !ready(emulator.get_raw("aerugo.io/v1alpha1", plural, Some("team"), name).as_ref()) {
            assert!(std::time::Instant::now() < deadline, "{plural}/{name} never became Ready");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let lease =
        emulator.get_raw("coordination.k8s.io/v1", "leases", Some("default"), "aerugo-operator").expect("a Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-0");
    let pull = emulator.get::<k8s_openapi::api::core::v1::Secret>(Some("team"), "acme-pull").expect("pull Secret");
    assert_eq!(pull.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let metrics = http_raw(&admin, "GET", "/metrics").expect("metrics");
    assert!(metrics.contains("aerugo_operator_reconcile_runs_total{controller=\"repository\"}"), "{metrics}");
    assert_eq!(http_status(&admin, "GET", "/readyz"), Some(200));
}
