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
    // skopeo's message starts with `time="…"`: two runs may fall in different seconds.
    let strip = |s: &str| {
        let s = s.split_once(" level=").map_or(s, |(_, rest)| rest);
        s.replace("library/base", "X").replace("library/absent", "X")
    };
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

/// containerd's resolver (`ctr`, the client Kubernetes nodes pull with) through the token flow:
/// a pull and a push as a user follow the `WWW-Authenticate: Bearer` challenge to a token with
/// the repository's scope; a push whose cross-repository mount names a repository the user may
/// not read still succeeds (the mount falls back to an upload, and nothing of the other
/// organization is revealed); a pull-only key's push fails on `403 DENIED` (with the
/// `insufficient_scope` challenge, RFC 6750) without a loop of token requests.
#[tokio::test]
async fn containerd_resolver_pulls_and_pushes_through_the_token_flow() {
    let containerd = match aerugo_e2e::containerd::Containerd::start() {
        Ok(c) => c,
        Err(missing) => {
            aerugo_test_support::skip(&missing);
            return;
        }
    };
    let server = Server::start(&fresh_database().await, Storage::File);
    let admin = (ADMIN_USER, ADMIN_PASSWORD);
    let user = json!({ "username": "carol", "password": "carol-password" });
    assert_eq!(api(&server, admin, "POST", "/api/v1/users", Some(user)).0, 201);
    let carol = ("carol", "carol-password");
    assert_eq!(api(&server, carol, "POST", "/api/v1/orgs", Some(json!({ "name": "acme" }))).0, 201);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let digest = oci_layout(&src, "linux/amd64", 30_000, 21);
    let layout = format!("oci:{}:latest", src.display());
    server.skopeo(&["copy", "--dest-tls-verify=false", &layout, &format!("docker://{}/library/base:v1", server.host)]);
    server.skopeo(&["copy", "--dest-tls-verify=false", &layout, &format!("docker://{}/acme/app:v1", server.host)]);

    // Pull as carol: the challenge, a token for acme/app, the image.
    let app = format!("{}/acme/app:v1", server.host);
    let carol_login = format!("{}:{}", carol.0, carol.1);
    let pulled = containerd.ctr_output(&["content", "fetch", "--plain-http", "--http-dump", "-u", &carol_login, &app]);
    let dump = String::from_utf8_lossy(&pulled.stderr).into_owned() + &String::from_utf8_lossy(&pulled.stdout);
    assert!(pulled.status.success(), "ctr pull failed:\n{dump}");
    assert!(dump.contains("401 Unauthorized") && dump.contains("Www-Authenticate: Bearer realm="), "{dump}");
    assert!(
        dump.contains("scope=repository%3Aacme%2Fapp%3Apull") || dump.contains("scope=repository:acme/app:pull"),
        "{dump}"
    );
    let images = containerd.ctr(&["images", "ls"]);
    assert!(images.lines().any(|l| l.starts_with(&app) && l.contains(&digest)), "{images}");
    // The administrator's image in another organization is not found for her.
    let base = format!("{}/library/base:v1", server.host);
    let theirs = containerd.ctr_output(&["content", "fetch", "--plain-http", "-u", &carol_login, &base]);
    assert!(!theirs.status.success());
    let theirs = String::from_utf8_lossy(&theirs.stderr);
    assert!(theirs.contains("not found"), "{theirs}");

    // Fetched as the administrator, the image carries library/base as its source; carol's push of
    // it into her organization asks to mount from there, which she may not read: the blobs are
    // uploaded instead, and the copy is whole.
    let admin_login = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    containerd.ctr(&["content", "fetch", "--plain-http", "-u", &admin_login, &base]);
    let copy = format!("{}/acme/copy:v1", server.host);
    containerd.ctr(&["images", "tag", &base, &copy]);
    let pushed = containerd.ctr_output(&["images", "push", "--plain-http", "--http-dump", "-u", &carol_login, &copy]);
    let dump = String::from_utf8_lossy(&pushed.stderr).into_owned() + &String::from_utf8_lossy(&pushed.stdout);
    assert!(pushed.status.success(), "ctr push failed:\n{dump}");
    assert!(dump.contains("mount="), "containerd did not try a cross-repository mount:\n{dump}");
    let inspect =
        server.skopeo(&["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &format!("docker://{copy}")]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), digest);

    // A pull-only key cannot push: 403 DENIED, one token request, no retry loop.
    let (status, key) = api(
        &server,
        carol,
        "POST",
        "/api/v1/api-keys",
        Some(json!({ "name": "puller", "scopes": [{ "repositories": "acme/**", "actions": ["pull"] }] })),
    );
    assert_eq!(status, 201);
    let key_login = format!("carol:{}", key["key"].as_str().expect("key"));
    containerd.ctr(&["content", "fetch", "--plain-http", "-u", &key_login, &app]);
    let denied_ref = format!("{}/acme/denied:v1", server.host);
    containerd.ctr(&["images", "tag", &app, &denied_ref]);
    let refused =
        containerd.ctr_output(&["images", "push", "--plain-http", "--http-dump", "-u", &key_login, &denied_ref]);
    let dump = String::from_utf8_lossy(&refused.stderr).into_owned() + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "a pull-only key pushed:\n{dump}");
    // (ctr does not dump error bodies; the body's DENIED code is checked in dataplane/tests/it/auth.rs.)
    assert!(dump.contains("ctr: unexpected status: 403 Forbidden"), "{dump}");
    assert!(dump.contains(r#"scope=\"repository:acme/denied:pull,push\",error=\"insufficient_scope\""#), "{dump}");
    let token_requests = dump.matches("POST /v2/token").count() + dump.matches("GET /v2/token").count();
    assert!((1..=2).contains(&token_requests), "{token_requests} token requests:\n{dump}");
    let missing = server.http_as_admin("HEAD", "/v2/acme/denied/manifests/v1").expect("answer");
    assert!(missing.starts_with("HTTP/1.0 404") || missing.starts_with("HTTP/1.1 404"), "{missing}");
}
