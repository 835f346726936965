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
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
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
