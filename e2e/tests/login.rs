//! Client login flows against the real binary: users made through the management API log in
//! with skopeo, podman and oras (the Bearer token flow), with a password or an API key, and
//! stay inside their own organization.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::{Command, Output};

use aerugo_e2e::*;
use serde_json::{Value, json};

/// A management API call with `curl`; returns (status, JSON body).
fn api(server: &Server, user: (&str, &str), method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-u", &format!("{}:{}", user.0, user.1), "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", server.host));
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()]);
    }
    let out = run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A client command that is expected to fail; returns its combined output.
fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("run");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn skopeo_with(auth_file: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.env("REGISTRY_AUTH_FILE", auth_file);
    cmd
}

#[tokio::test]
async fn users_log_in_with_real_clients_and_stay_in_their_organization() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let admin = (ADMIN_USER, ADMIN_PASSWORD);
    let (status, _) = api(
        &server,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({ "username": "alice", "password": "alice-password" })),
    );
    assert_eq!(status, 201);
    let alice = ("alice", "alice-password");
    assert_eq!(api(&server, alice, "POST", "/api/v1/orgs", Some(json!({ "name": "acme" }))).0, 201);

    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 20_000, 11);
    let layout = format!("oci:{}:latest", src.display());
    // The administrator's image in another organization.
    server.skopeo(&["copy", "--dest-tls-verify=false", &layout, &format!("docker://{}/library/base:v1", server.host)]);

    // skopeo login (password) writes the auth file; copies then go through the token flow.
    let auth_file = work.path().join("alice-auth.json");
    run(skopeo_with(&auth_file).args([
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "alice-password",
        &server.host,
    ]));
    let wrong = fails(skopeo_with(&work.path().join("x.json")).args([
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wrong-password",
        &server.host,
    ]));
    assert!(wrong.contains("invalid username/password") || wrong.contains("401"), "{wrong}");
    let own = format!("docker://{}/acme/app:v1", server.host);
    run(skopeo_with(&auth_file).args(["copy", "--dest-tls-verify=false", &layout, &own]));
    run(skopeo_with(&auth_file).args(["inspect", "--tls-verify=false", &own]));
    // Outside her organization, an image that exists and one that does not look the same.
    let theirs = fails(skopeo_with(&auth_file).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/library/base:v1", server.host),
    ]));
    let absent = fails(skopeo_with(&auth_file).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/library/absent:v1", server.host),
    ]));
    let strip = |s: &str| s.replace("library/base", "X").replace("library/absent", "X");
    assert_eq!(strip(&theirs), strip(&absent), "existence leaks across organizations");
    fails(skopeo_with(&auth_file).args([
        "copy",
        "--dest-tls-verify=false",
        &layout,
        &format!("docker://{}/library/planted:v1", server.host),
    ]));

    // An API key (pull only) as the password of podman login.
    let (status, key) = api(
        &server,
        alice,
        "POST",
        "/api/v1/api-keys",
        Some(json!({ "name": "puller", "scopes": [{ "repositories": "acme/**", "actions": ["pull"] }] })),
    );
    assert_eq!(status, 201);
    let key = key["key"].as_str().expect("key").to_owned();
    let storage = work.path().join("containers");
    let podman = |auth: &Path| {
        let mut cmd = Command::new("podman");
        cmd.env("REGISTRY_AUTH_FILE", auth)
            .arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"]);
        cmd
    };
    let key_auth = work.path().join("key-auth.json");
    run(podman(&key_auth).args(["login", "--tls-verify=false", "-u", "alice", "-p", &key, &server.host]));
    let image = format!("{}/acme/app:v1", server.host);
    run(podman(&key_auth).args(["pull", "-q", "--tls-verify=false", &image]));
    let copy = format!("{}/acme/copy:v1", server.host);
    run(podman(&key_auth).args(["tag", &image, &copy]));
    fails(podman(&key_auth).args(["push", "-q", "--tls-verify=false", &copy]));

    // oras with alice's password.
    let file = work.path().join("notes.txt");
    std::fs::write(&file, b"release notes").expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oras_client.py");
    let oras = |user: &str, password: &str, reference: &str| {
        let mut cmd = Command::new("python3");
        cmd.env("AERUGO_E2E_USER", user).env("AERUGO_E2E_PASSWORD", password).arg(&script).args([
            "push",
            &server.host,
            reference,
            file.to_str().expect("utf8"),
        ]);
        cmd
    };
    run(&mut oras("alice", "alice-password", "acme/notes:v1"));
    fails(&mut oras("alice", "alice-password", "library/notes:v1"));
    // (A wrong password is checked with skopeo above: oras-py retries failed token requests
    // with exponential backoff for about two minutes before giving up.)

    // The catalog shows alice her organization only.
    let (status, catalog) = api(&server, alice, "GET", "/v2/_catalog", None);
    assert_eq!(status, 200);
    assert_eq!(catalog["repositories"], json!(["acme/app", "acme/notes"]));
    // The audit log saw the refused push.
    let (_, events) = api(&server, admin, "GET", "/api/v1/audit", None);
    let denied = events.as_array().expect("events").iter().any(|e| e["actor"] == "alice" && e["outcome"] == "denied");
    assert!(denied, "{events}");
}

#[tokio::test]
async fn a_token_narrowed_offline_with_the_cli_is_honoured() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 5_000, 12);
    server.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{}/ops/app:v1", server.host),
    ]);
    let scope = "repository:ops/app:pull,push,delete";
    let out = run(Command::new("curl").args([
        "-sSf",
        "-u",
        &format!("{ADMIN_USER}:{ADMIN_PASSWORD}"),
        &format!("http://{}/v2/token?service=aerugo&scope={scope}", server.host),
    ]));
    let token: Value = serde_json::from_slice(&out.stdout).expect("json");
    let token = token["token"].as_str().expect("token").to_owned();
    let mut narrow = Command::new(dataplane_bin());
    narrow
        .args(["token", "attenuate", "--repository", "ops/app", "--actions", "pull", "--expires-in", "120"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = narrow.spawn().expect("spawn");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(token.as_bytes()).expect("write");
    let narrowed = child.wait_with_output().expect("attenuate");
    assert!(narrowed.status.success());
    let narrowed = String::from_utf8(narrowed.stdout).expect("utf8").trim().to_owned();
    let status = |token: &str, method: &str, path: &str| {
        let out = run(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{}{path}", server.host),
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(&token, "POST", "/v2/ops/app/blobs/uploads/"), "202");
    assert_eq!(status(&narrowed, "GET", "/v2/ops/app/tags/list"), "200");
    // The narrowed token does not allow these; its holder (the administrator) could get a token
    // that does: 401 insufficient_scope, so a client asks for one.
    assert_eq!(status(&narrowed, "POST", "/v2/ops/app/blobs/uploads/"), "401");
    assert_eq!(status(&narrowed, "DELETE", "/v2/ops/app/manifests/v1"), "401");
}
