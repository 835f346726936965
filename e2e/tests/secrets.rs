//! Secrets hygiene: with debug logging on, a data plane that handled passwords (right and
//! wrong), API keys, bearer tokens and its signing key writes none of them to its log, its
//! error bodies or its metrics; the operator's file mode does not print the keys it generates.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::process::Command;

use aerugo_e2e::*;
use base64::Engine as _;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS"]).args(args).output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The places a secret must not appear, and the secrets themselves (with their encodings).
fn assert_absent(haystacks: &[(&str, &str)], secrets: &[(&str, String)]) {
    for (place, text) in haystacks {
        assert!(!text.is_empty() || *place == "error bodies", "{place} is empty: the test captured nothing");
        for (what, secret) in secrets {
            assert!(secret.len() >= 8, "{what} is too short to search for");
            assert!(!text.contains(secret.as_str()), "{place} contains {what}");
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_metrics() {
    // A password in the database URL too (the test server trusts local connections, so any
    // password works).
    let db_password = "Db-Secret-Pass-4455";
    let database = fresh_database().await.replacen("://postgres@", &format!("://postgres:{db_password}@"), 1);
    assert!(database.contains(db_password), "{database}");
    let work = tempfile::tempdir().expect("tempdir");
    let log = work.path().join("dataplane.log");
    let server = Server::start_logging_to(&database, Storage::File, &log);
    let base = format!("http://{}", server.host);
    let admin = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    let password = "alice-Secret-Passw0rd-7731";
    let wrong = "alice-Wrong-Passw0rd-9921";

    // A user with a password, an organization, an API key.
    let json = ["-H", "Content-Type: application/json"];
    let body = format!(r#"{{"username":"alice","password":"{password}"}}"#);
    curl(&[&["-u", &admin, "-X", "POST", &format!("{base}/api/v1/users"), "-d", &body][..], &json[..]].concat());
    let alice = format!("alice:{password}");
    curl(
        &[&["-u", &alice, "-X", "POST", &format!("{base}/api/v1/orgs"), "-d", r#"{"name":"alice"}"#][..], &json[..]]
            .concat(),
    );
    let created = curl(
        &[
            &[
                "-u",
                &alice,
                "-X",
                "POST",
                &format!("{base}/api/v1/api-keys"),
                "-d",
                r#"{"name":"ci","scopes":[{"repositories":"alice/**","actions":["pull","push"]}]}"#,
            ][..],
            &json[..],
        ]
        .concat(),
    );
    let key: serde_json::Value = serde_json::from_str(&created).expect("created key");
    let api_key = key["key"].as_str().expect("the key, shown once").to_owned();

    // Use them: tokens with the password and the key, pulls and pushes with the token, and
    // failures — a wrong password, a mangled key, a forged bearer token.
    let token_for = |creds: &str| -> String {
        let reply =
            curl(&["-u", creds, &format!("{base}/v2/token?service=aerugo&scope=repository:alice/app:pull,push")]);
        let value: serde_json::Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("token reply {reply}"));
        value["token"].as_str().unwrap_or_else(|| panic!("no token in {reply}")).to_owned()
    };
    let token = token_for(&alice);
    let key_token = token_for(&format!("alice:{api_key}"));
    let bearer = format!("Authorization: Bearer {token}");
    let blob = "hygiene-layer-bytes";
    let digest = sha256_digest(blob.as_bytes());
    curl(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        "--data-binary",
        blob,
        &format!("{base}/v2/alice/app/blobs/uploads/?digest={digest}"),
    ]);
    curl(&["-H", &format!("Authorization: Bearer {key_token}"), &format!("{base}/v2/alice/app/blobs/{digest}")]);
    curl(&["-u", &format!("alice:{api_key}"), &format!("{base}/v2/alice/app/tags/list")]);
    let mut errors = String::new();
    errors += &curl(&["-u", &format!("alice:{wrong}"), &format!("{base}/v2/token?scope=repository:alice/app:pull")]);
    errors += &curl(&["-u", &format!("alice:{wrong}"), &format!("{base}/v2/_catalog")]);
    errors += &curl(&["-u", &format!("alice:{api_key}x"), &format!("{base}/v2/_catalog")]);
    errors += &curl(&["-H", &format!("Authorization: Bearer {token}x"), &format!("{base}/v2/alice/app/tags/list")]);
    errors += &curl(&["-u", &format!("alice:{wrong}"), &format!("{base}/api/v1/user")]);
    let metrics = curl(&[&format!("http://{}/metrics", server.admin)]);
    let signing_key = std::fs::read_to_string(&server.key_file).expect("key file").trim().to_owned();
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("DEBUG") || logged.contains("debug"), "debug logging was on: {logged}\n{errors}");

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret_part = api_key.rsplit('_').next().unwrap().to_owned();
    let secrets = [
        ("the administrator's password", ADMIN_PASSWORD.to_owned()),
        ("alice's password", password.to_owned()),
        ("a wrong password", wrong.to_owned()),
        ("Basic credentials", b64(&alice)),
        ("the API key", api_key.clone()),
        ("the API key's secret part", secret_part),
        ("a bearer token", token.clone()),
        ("a bearer token's signature half", token[token.len() / 2..].to_owned()),
        ("a key's bearer token", key_token.clone()),
        ("the token signing key", signing_key),
        ("the database password", db_password.to_owned()),
    ];
    assert_absent(&[("the data plane's log", &logged), ("error bodies", &errors), ("metrics", &metrics)], &secrets);
}

#[tokio::test]
async fn the_operator_does_not_print_the_keys_it_generates() {
    let database = fresh_database().await;
    let db = aerugo_db::pool(&database, 1).expect("pool");
    aerugo_db::tenancy::create_user(&db.get().await.expect("db"), "admin", None, None, true, "system")
        .await
        .expect("user");
    let secrets = tempfile::tempdir().expect("tempdir");
    let examples = repo_root().join("examples");
    let out = run(Command::new(operator_bin())
        .args(["apply", "-f"])
        .arg(&examples)
        .arg("--secrets-dir")
        .arg(secrets.path())
        .env("AERUGO_DATABASE_URL", &database)
        .env("RUST_LOG", "debug"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("Ready=True"));
    let manifest = std::fs::read_to_string(secrets.path().join("team/ci-push.yaml")).expect("Secret manifest");
    let secret: serde_json::Value = serde_saphyr::from_str(&manifest).expect("YAML");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["apiKey"].as_str().expect("apiKey"))
        .map(|k| String::from_utf8(k).expect("utf-8"))
        .expect("base64");
    let pull = std::fs::read_to_string(secrets.path().join("team/acme-pull.yaml")).expect("pull Secret");
    let pull: serde_json::Value = serde_saphyr::from_str(&pull).expect("YAML");
    let config = base64::engine::general_purpose::STANDARD
        .decode(pull["data"][".dockerconfigjson"].as_str().expect("dockerconfigjson"))
        .expect("base64");
    let config: serde_json::Value = serde_json::from_slice(&config).expect("JSON");
    let pull_key =
        config["auths"].as_object().unwrap().values().next().unwrap()["password"].as_str().unwrap().to_owned();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_absent(
        &[("the operator's output", &printed)],
        &[
            ("the CI key", key.clone()),
            ("the CI key in base64", b64(&key)),
            ("the pull key", pull_key.clone()),
            ("the pull key's secret part", pull_key.rsplit('_').next().unwrap().to_owned()),
        ],
    );
}
