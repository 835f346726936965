//! The operator's controllers, run as `main` runs them (`controller::run`), against the
//! Kubernetes API emulator and a fresh real Postgres database per test; and file mode on the
//! `examples/` directory.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;

use std::time::Duration;

use aerugo_crds::{ApiKey, EventSubscription, Mirror, Organization, Repository};
use aerugo_kube_emulator::{Emulator, Fault, Verb};
use aerugo_operator::context::{Metrics, Settings};
use aerugo_operator::controller::{self, ClusterContext};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A collection pass of `batch` entries per transaction.
fn gc(batch: i64) -> aerugo_operator::collector::Options {
    aerugo_operator::collector::Options { batch, dry_run: false, require_in_use: false }
}

struct Harness {
    emulator: Emulator,
    db: aerugo_db::Pool,
    client: kube::Client,
}

async fn start() -> Harness {
    start_with(Duration::from_secs(2)).await
}

async fn start_with(resync: Duration) -> Harness {
    start_on(resync, None).await
}

/// A harness whose operator reaches blob storage (for dedicated organization buckets).
async fn start_on(resync: Duration, storage: Option<aerugo_operator::context::StorageAccess>) -> Harness {
    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 4).expect("pool");
    let client_db = db.get().await.expect("connection");
    for user in ["ada", "bob"] {
        aerugo_db::tenancy::create_user(&client_db, user, None, None, false, "api").await.expect("user");
    }
    drop(client_db);
    let emulator = Emulator::new();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    assert_eq!(emulator.install_crds_from(&crds).expect("CRDs"), 6);
    for ns in ["team", "other"] {
        emulator
            .seed(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }))
            .expect("namespace");
    }
    let client = emulator.client();
    let settings = Settings { registry_host: "registry.test:5000".into(), resync, storage, pods_watched: false };
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let cluster = ClusterContext::new(client.clone(), db.clone(), settings, metrics);
    tokio::spawn(controller::run(cluster));
    Harness { emulator, db, client }
}

async fn create(h: &Harness, namespace: &str, object: Value) {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let plural = match kind.as_str() {
        "Organization" => "organizations",
        "Repository" => "repositories",
        "Registry" => "registries",
        "EventSubscription" => "eventsubscriptions",
        "Mirror" => "mirrors",
        _ => "apikeys",
    };
    let gvk = kube::api::GroupVersionKind::gvk("aerugo.io", "v1alpha1", &kind);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(h.client.clone(), namespace, &kube::api::ApiResource::from_gvk_with_plural(&gvk, plural));
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.expect("create");
}

fn ready_reason<K>(obj: Option<&K>) -> Option<(String, String)>
where
    K: serde::Serialize,
{
    let value = serde_json::to_value(obj?).ok()?;
    let conditions = value["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((ready["status"].as_str()?.to_owned(), ready["reason"].as_str()?.to_owned()))
}

async fn wait_reason<K>(h: &Harness, namespace: &str, name: &str, status: &str, reason: &str) -> K
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + serde::Serialize,
{
    h.emulator
        .wait_for::<K, _>(Some(namespace), name, WAIT, |o| {
            ready_reason(o) == Some((status.to_owned(), reason.to_owned()))
        })
        .await
        .unwrap_or_else(|_| {
            let now = h.emulator.get::<K>(Some(namespace), name);
            panic!("{namespace}/{name} never became Ready={status} ({reason}); it is {:?}", ready_reason(now.as_ref()))
        })
        .expect("exists")
}

fn org(name: &str, extra: Value) -> Value {
    let mut spec = json!({ "members": [{ "user": "ada", "role": "Owner" }] });
    json_patch::merge(&mut spec, &extra);
    json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Organization", "metadata": { "name": name }, "spec": spec })
}

fn repo(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Repository", "metadata": { "name": name }, "spec": spec })
}

fn key(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "ApiKey", "metadata": { "name": name }, "spec": spec })
}

#[tokio::test]
async fn objects_become_rows_secrets_and_status() {
    let h = start().await;
    create(&h, "team", org("acme", json!({ "quota": { "storage": "1Gi" } }))).await;
    create(&h, "team", key("ci", json!({ "organizationRef": { "name": "acme" }, "scopes": [{ "repositories": "**", "actions": ["Pull", "Push"] }] }))).await;
    create(
        &h,
        "team",
        repo("app", json!({ "organizationRef": { "name": "acme" }, "name": "team/app", "immutableTags": ["v*"], "grants": [{ "user": "bob", "access": "Push" }, { "apiKeyRef": { "name": "ci" }, "access": "Pull" }] })),
    )
    .await;

    let organization: Organization = wait_reason(&h, "team", "acme", "True", "Reconciled").await;
    let status = organization.status.expect("status");
    let org_id = status.org_id.expect("orgId");
    assert_eq!(status.observed_generation, Some(1));
    let repository: Repository = wait_reason(&h, "team", "app", "True", "Reconciled").await;
    assert_eq!(repository.status.as_ref().and_then(|s| s.full_name.as_deref()), Some("acme/team/app"));
    let api_key: ApiKey = wait_reason(&h, "team", "ci", "True", "Reconciled").await;
    let key_id = api_key.status.as_ref().and_then(|s| s.key_id.clone()).expect("keyId");

    let db = h.db.get().await.expect("db");
    let row = db
        .query_one(
            "SELECT name, managed_by, quota_bytes, k8s_namespace, k8s_uid::text FROM organizations WHERE id = $1",
            &[&org_id],
        )
        .await
        .expect("org row");
    assert_eq!(row.get::<_, String>(0), "acme");
    assert_eq!(row.get::<_, String>(1), "kubernetes");
    assert_eq!(row.get::<_, Option<i64>>(2), Some(1 << 30));
    assert_eq!(row.get::<_, Option<String>>(4), organization.metadata.uid);
    let members: i64 = db
        .query_one("SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'", &[&org_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 1);
    let repo_row = db
        .query_one("SELECT immutable_tag_patterns, managed_by FROM repositories WHERE name = 'acme/team/app'", &[])
        .await
        .expect("repo row");
    assert_eq!(repo_row.get::<_, Vec<String>>(0), ["v*"]);
    let grants: Vec<(String, String)> = db
        .query("SELECT subject_kind, access FROM repository_grants g JOIN repositories r ON r.id = g.repository_id WHERE r.name = 'acme/team/app' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(grants, [("api_key".to_owned(), "pull".to_owned()), ("user".to_owned(), "push".to_owned())]);

    // The Secret is a ready imagePullSecrets entry holding a key whose hash (only) is stored.
    let secret = h.emulator.get::<Secret>(Some("team"), "ci").expect("secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(secret.metadata.owner_references.as_ref().expect("owner")[0].name, "ci");
    let token = aerugo_operator::key::token_in(&secret).expect("token");
    let presented = aerugo_auth::apikey::parse(&token).expect("an API key");
    assert_eq!(presented.key_id, key_id);
    let stored: Vec<u8> =
        db.query_one("SELECT key_hash FROM api_keys WHERE key_id = $1", &[&key_id]).await.unwrap().get(0);
    assert!(presented.matches(&stored));
    let config: Value = serde_json::from_slice(&secret.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    assert_eq!(config["auths"]["registry.test:5000"]["username"], "acme");

    // Drift: a member removed behind the operator's back comes back on the next resync.
    db.execute("DELETE FROM org_members WHERE org_id = $1", &[&org_id]).await.unwrap();
    let mut restored = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n: i64 =
            db.query_one("SELECT COUNT(*) FROM org_members WHERE org_id = $1", &[&org_id]).await.unwrap().get(0);
        if n == 1 {
            restored = true;
            break;
        }
    }
    assert!(restored, "drift corrected on resync");

    // A deleted Secret is rewritten with a new key; the old one is revoked.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "team");
    secrets.delete("ci", &DeleteParams::default()).await.expect("delete secret");
    let rewritten = h
        .emulator
        .wait_for::<Secret, _>(Some("team"), "ci", WAIT, |s| {
            s.and_then(aerugo_operator::key::token_in).is_some_and(|t| t != token)
        })
        .await
        .expect("rewritten")
        .expect("exists");
    let revoked: bool =
        db.query_one("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1", &[&key_id]).await.unwrap().get(0);
    assert!(revoked, "the key the Secret no longer holds is revoked");

    // Deleting the ApiKey revokes its key at once and removes the Secret.
    let new_key_id = aerugo_auth::apikey::parse(&aerugo_operator::key::token_in(&rewritten).unwrap()).unwrap().key_id;
    let keys: Api<ApiKey> = Api::namespaced(h.client.clone(), "team");
    keys.delete("ci", &DeleteParams::default()).await.expect("delete key");
    h.emulator.wait_for::<ApiKey, _>(Some("team"), "ci", WAIT, |k| k.is_none()).await.expect("finalized");
    let revoked: bool = db
        .query_one("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1", &[&new_key_id])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    assert!(h.emulator.get::<Secret>(Some("team"), "ci").is_none());

    // Retain: deleting the Organization keeps its row, orphaned; a new object adopts it.
    let repos: Api<Repository> = Api::namespaced(h.client.clone(), "team");
    repos.delete("app", &DeleteParams::default()).await.unwrap();
    h.emulator.wait_for::<Repository, _>(Some("team"), "app", WAIT, |r| r.is_none()).await.expect("repo finalized");
    let orgs: Api<Organization> = Api::namespaced(h.client.clone(), "team");
    orgs.delete("acme", &DeleteParams::default()).await.unwrap();
    h.emulator.wait_for::<Organization, _>(Some("team"), "acme", WAIT, |o| o.is_none()).await.expect("org finalized");
    let orphaned: bool = db
        .query_one("SELECT orphaned_at IS NOT NULL AND k8s_uid IS NULL FROM organizations WHERE id = $1", &[&org_id])
        .await
        .unwrap()
        .get(0);
    assert!(orphaned, "Retain keeps the row, orphaned");
    create(&h, "team", org("acme", json!({}))).await;
    let adopted: Organization = wait_reason(&h, "team", "acme", "True", "Reconciled").await;
    assert_eq!(
        adopted.status.and_then(|s| s.org_id),
        Some(org_id),
        "the same namespace adopts its orphaned organization"
    );
}

#[tokio::test]
async fn the_namespace_is_the_tenant_boundary() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    // Same name in another namespace: refused, the first owner keeps it.
    create(&h, "other", org("acme", json!({}))).await;
    let taken: Organization = wait_reason(&h, "other", "acme", "False", "NameTaken").await;
    let message = taken.status.unwrap().conditions[0].message.clone();
    assert!(message.contains("\"team\""), "{message}");
    // A reference resolves in the object's own namespace only: `acme` here is the refused one,
    // which owns no row; `umbrella` exists only in `team`.
    create(&h, "other", repo("sneaky", json!({ "organizationRef": { "name": "acme" }, "name": "sneaky" }))).await;
    wait_reason::<Repository>(&h, "other", "sneaky", "False", "OrganizationNotReady").await;
    create(&h, "team", org("umbrella", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "umbrella", "True", "Reconciled").await;
    create(&h, "other", repo("reach", json!({ "organizationRef": { "name": "umbrella" } }))).await;
    wait_reason::<Repository>(&h, "other", "reach", "False", "OrganizationNotFound").await;
    let db = h.db.get().await.unwrap();
    let n: i64 = db.query_one("SELECT COUNT(*) FROM repositories", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "nothing was written for the cross-namespace reference");
    // An unknown member is reported, the rest applied.
    create(
        &h,
        "other",
        org(
            "initech",
            json!({ "members": [{ "user": "ada", "role": "Owner" }, { "user": "nobody", "role": "Viewer" }] }),
        ),
    )
    .await;
    let partial: Organization = wait_reason(&h, "other", "initech", "False", "UnknownUser").await;
    assert!(partial.status.unwrap().conditions[0].message.contains("nobody"));
}

/// File mode with pruning on `text` written as `dir/tenant.yaml`.
async fn apply_files(
    db: aerugo_db::Pool,
    dir: std::path::PathBuf,
    secrets: std::path::PathBuf,
    text: String,
) -> Vec<aerugo_operator::files::Outcome> {
    std::fs::write(dir.join("tenant.yaml"), text).unwrap();
    let settings = Settings {
        registry_host: "127.0.0.1:5000".into(),
        resync: Duration::from_secs(300),
        storage: None,
        pods_watched: false,
    };
    aerugo_operator::files::apply(db, &dir, secrets, settings, true).await.expect("apply")
}

fn subscription(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "EventSubscription", "metadata": { "name": name }, "spec": spec })
}

#[tokio::test]
async fn event_subscriptions_become_rows_and_report_delivery() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    create(&h, "other", org("initech", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    wait_reason::<Organization>(&h, "other", "initech", "True", "Reconciled").await;
    let spec = json!({
        "organizationRef": { "name": "acme" },
        "endpoint": "http://127.0.0.1:9/hook",
        "types": ["ManifestPushed", "TagMoved"],
        "repositories": ["team/*"],
        "signingSecret": { "name": "hook" },
        "batchSize": 10,
    });
    // The signing Secret comes later: the subscription waits for it.
    create(&h, "team", subscription("ci", spec.clone())).await;
    wait_reason::<EventSubscription>(&h, "team", "ci", "False", "SecretNotFound").await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "team");
    let hook = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "hook" },
                       "data": { "secret": "dGhlLXNpZ25pbmcta2V5LW9mLXRlYW0=" } });
    secrets.create(&PostParams::default(), &serde_json::from_value(hook).unwrap()).await.expect("secret");
    let ready: EventSubscription = wait_reason(&h, "team", "ci", "True", "Reconciled").await;
    let id = ready.status.as_ref().and_then(|s| s.subscription_id).expect("subscription id");
    let db = h.db.get().await.unwrap();
    let row = aerugo_db::events::subscription(&db, id).await.unwrap().expect("row");
    assert_eq!((row.org.as_str(), row.name.as_str(), row.managed_by.as_str()), ("acme", "ci", "kubernetes"));
    assert_eq!(row.types, ["io.aerugo.manifest.pushed", "io.aerugo.tag.moved"]);
    assert_eq!((row.batch_size, row.repositories.clone()), (10, vec!["team/*".to_owned()]));
    assert_eq!(row.signing_secret.as_deref(), Some(&b"the-signing-key-of-team"[..]));

    // The namespace is the boundary: an organization of another namespace is not found.
    let mut across = spec.clone();
    across["organizationRef"]["name"] = json!("initech");
    create(&h, "team", subscription("across", across)).await;
    wait_reason::<EventSubscription>(&h, "team", "across", "False", "OrganizationNotFound").await;
    // A glob that does not compile is an invalid spec.
    let mut bad = spec.clone();
    bad["repositories"] = json!(["team/["]);
    create(&h, "team", subscription("bad", bad)).await;
    wait_reason::<EventSubscription>(&h, "team", "bad", "False", "InvalidSpec").await;

    // What the delivering node records shows in the status: events waiting, a failing endpoint.
    db.batch_execute(&format!(
        "SELECT aerugo_emit_event(id, 'acme/team/app', 'io.aerugo.manifest.pushed', '{{}}') FROM organizations WHERE name = 'acme';
         SELECT aerugo_emit_event(id, 'acme/team/app', 'io.aerugo.tag.moved', '{{}}') FROM organizations WHERE name = 'acme';
         UPDATE event_subscriptions SET failures = 4, failing_since = now(), last_error = 'the endpoint answered HTTP 503' WHERE id = {id};"
    ))
    .await
    .unwrap();
    let failing = h
        .emulator
        .wait_for::<EventSubscription, _>(Some("team"), "ci", WAIT, |s| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.failing && st.backlog == 2)
        })
        .await
        .expect("status reports the failing endpoint and the backlog")
        .expect("exists");
    let status = failing.status.unwrap();
    assert_eq!(status.last_error.as_deref(), Some("the endpoint answered HTTP 503"));
    assert!(status.failing_since.is_some());

    // replayFrom replays once; the status says which.
    let patch = json!({ "spec": { "replayFrom": "2026-01-01T00:00:00Z" } });
    let subs: Api<EventSubscription> = Api::namespaced(h.client.clone(), "team");
    subs.patch("ci", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    h.emulator
        .wait_for::<EventSubscription, _>(Some("team"), "ci", WAIT, |s| {
            s.and_then(|s| s.status.as_ref()).and_then(|st| st.replayed_from.as_deref()) == Some("2026-01-01T00:00:00Z")
        })
        .await
        .expect("replayed");
    let row = aerugo_db::events::subscription(&db, id).await.unwrap().expect("row");
    assert_eq!(row.start_at.unix_timestamp(), 1_767_225_600);

    // Deleting the object deletes the row (the events stay in the feed).
    subs.delete("ci", &DeleteParams::default()).await.expect("delete");
    h.emulator.wait_for::<EventSubscription, _>(Some("team"), "ci", WAIT, |s| s.is_none()).await.expect("gone");
    assert!(aerugo_db::events::subscription(&db, id).await.unwrap().is_none());
}

fn mirror(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Mirror", "metadata": { "name": name }, "spec": spec })
}

#[tokio::test]
async fn mirrors_become_rows_with_their_credentials_and_conflicts_are_reported() {
    let h = start().await;
    create(&h, "team", org("hub", json!({}))).await;
    create(&h, "team", org("quay", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "hub", "True", "Reconciled").await;
    wait_reason::<Organization>(&h, "team", "quay", "True", "Reconciled").await;
    let spec = json!({
        "organizationRef": { "name": "hub" },
        "upstream": "https://registry-1.docker.io/",
        "registryHosts": ["docker.io"],
        "credentialsSecret": { "name": "hub-login" },
        "repositories": ["library/*"],
        "staleAfter": "15m",
        "maxSize": "10Gi",
    });
    // The credentials Secret comes later: the mirror waits for it.
    create(&h, "team", mirror("dockerhub", spec.clone())).await;
    wait_reason::<Mirror>(&h, "team", "dockerhub", "False", "SecretNotFound").await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "team");
    let login = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "hub-login" },
                        "data": { "username": "cm9ib3Q=", "password": "czNjcjN0" } });
    secrets.create(&PostParams::default(), &serde_json::from_value(login).unwrap()).await.expect("secret");
    let ready: Mirror = wait_reason(&h, "team", "dockerhub", "True", "Reconciled").await;
    let status = ready.status.expect("status");
    assert_eq!(status.registry_hosts, ["docker.io"]);
    let db = h.db.get().await.unwrap();
    let rows = aerugo_db::mirrors::all(&db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!((row.org.as_str(), row.upstream.as_str()), ("hub", "https://registry-1.docker.io"));
    assert_eq!(row.credentials, Some(("robot".to_owned(), "s3cr3t".to_owned())));
    assert_eq!((row.stale_after.as_secs(), row.max_bytes, row.serve_stale_on_error), (900, Some(10 << 30), true));
    assert_eq!(row.repositories, ["library/*"]);

    // One mirror per organization, one mirror per registry host.
    create(&h, "team", mirror("second", spec.clone())).await;
    wait_reason::<Mirror>(&h, "team", "second", "False", "OrganizationTaken").await;
    let mut same_host = spec.clone();
    same_host["organizationRef"]["name"] = json!("quay");
    create(&h, "team", mirror("same-host", same_host)).await;
    wait_reason::<Mirror>(&h, "team", "same-host", "False", "RegistryHostTaken").await;
    let mut bad = spec.clone();
    bad["organizationRef"]["name"] = json!("quay");
    bad["upstream"] = json!("https://user:pw@quay.io");
    create(&h, "team", mirror("bad", bad)).await;
    wait_reason::<Mirror>(&h, "team", "bad", "False", "InvalidSpec").await;

    // Deleting the object deletes the row; the organization keeps what was fetched.
    let mirrors: Api<Mirror> = Api::namespaced(h.client.clone(), "team");
    mirrors.delete("dockerhub", &DeleteParams::default()).await.expect("delete");
    h.emulator.wait_for::<Mirror, _>(Some("team"), "dockerhub", WAIT, |s| s.is_none()).await.expect("gone");
    assert!(aerugo_db::mirrors::all(&db).await.unwrap().iter().all(|m| m.name != "dockerhub"));
}

#[tokio::test]
async fn file_mode_declares_and_prunes_event_subscriptions() {
    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 4).expect("pool");
    aerugo_db::tenancy::create_user(&db.get().await.unwrap(), "ada", None, None, false, "api").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let org = serde_saphyr::to_string(&org("acme", json!({}))).unwrap();
    let sub = serde_saphyr::to_string(&subscription(
        "deploys",
        json!({ "organizationRef": { "name": "acme" }, "endpoint": "http://127.0.0.1:9/", "types": ["TagMoved"] }),
    ))
    .unwrap();
    let apply = |docs: Vec<String>| {
        let text = docs.iter().map(|d| d.replace("metadata:\n", "metadata:\n  namespace: team\n")).collect::<Vec<_>>();
        apply_files(db.clone(), dir.path().to_owned(), secrets.path().to_owned(), text.join("\n---\n"))
    };
    let first = apply(vec![org.clone(), sub]).await;
    assert!(first.iter().all(|o| o.ready), "{first:#?}");
    let conn = db.get().await.unwrap();
    let count = || async {
        let n: i64 = conn
            .query_one("SELECT COUNT(*) FROM event_subscriptions WHERE name = 'deploys'", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    assert_eq!(count().await, 1);
    let second = apply(vec![org]).await;
    assert!(second.iter().any(|o| o.pruned && o.kind == "eventsubscription"), "{second:#?}");
    assert_eq!(count().await, 0, "a subscription that left the directory is deleted");
}

#[tokio::test]
async fn invalid_specs_and_faults_are_reported() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    // An invalid spec: Ready=False InvalidSpec, and an Event.
    create(
        &h,
        "team",
        key(
            "bad",
            json!({ "organizationRef": { "name": "acme" }, "scopes": [{ "repositories": "[", "actions": ["Pull"] }] }),
        ),
    )
    .await;
    wait_reason::<ApiKey>(&h, "team", "bad", "False", "InvalidSpec").await;
    let events =
        h.emulator.requests().into_iter().filter(|r| r.group == "events.k8s.io" && r.verb == Verb::Create).count();
    assert!(events >= 1, "an Event reports the invalid spec");
    // A fix makes it Ready.
    let keys: Api<ApiKey> = Api::namespaced(h.client.clone(), "team");
    keys.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "scopes": [{ "repositories": "*", "actions": ["Pull"] }] } })),
    )
    .await
    .unwrap();
    wait_reason::<ApiKey>(&h, "team", "bad", "True", "Reconciled").await;

    // The API failing on status writes: retried until it works, nothing half-applied.
    h.emulator.fail_next(Fault::new(500).verb(Verb::Patch).resource("repositories").status(true).times(2));
    h.emulator.fail_next(Fault::new(409).verb(Verb::Patch).resource("repositories").status(false).times(1));
    create(&h, "team", repo("app", json!({ "organizationRef": { "name": "acme" } }))).await;
    wait_reason::<Repository>(&h, "team", "app", "True", "Reconciled").await;
    assert!(h.emulator.requests().iter().any(|r| r.resource == "repositories" && r.code == 500));
    let db = h.db.get().await.unwrap();
    let n: i64 = db.query_one("SELECT COUNT(*) FROM repositories WHERE name = 'acme/app'", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn file_mode_reconciles_the_examples_without_a_cluster() {
    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 4).expect("pool");
    aerugo_db::tenancy::create_user(&db.get().await.unwrap(), "admin", None, None, true, "system").await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let settings = || Settings {
        registry_host: "127.0.0.1:5000".into(),
        resync: Duration::from_secs(300),
        storage: None,
        pods_watched: false,
    };
    let outcomes = aerugo_operator::files::apply(db.clone(), &examples, secrets.path().to_owned(), settings(), false)
        .await
        .expect("apply");
    assert!(outcomes.iter().all(|o| o.ready), "{outcomes:#?}");
    assert_eq!(outcomes.len(), 6);
    let pull = std::fs::read_to_string(secrets.path().join("team/acme-pull.yaml")).expect("pull secret");
    let push = std::fs::read_to_string(secrets.path().join("team/ci-push.yaml")).expect("push secret");
    let pull: Secret = serde_saphyr::from_str(&pull).unwrap();
    let push: Secret = serde_saphyr::from_str(&push).unwrap();
    assert_eq!(pull.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(push.type_.as_deref(), Some("Opaque"));
    let token = aerugo_operator::key::token_in(&push).unwrap();

    // A second run is a no-op: same keys, no new rows, no writes.
    let conn = db.get().await.unwrap();
    let counts = "SELECT (SELECT COUNT(*) FROM api_keys), (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM repository_grants)";
    let before: (i64, i64, i64) = conn.query_one(counts, &[]).await.map(|r| (r.get(0), r.get(1), r.get(2))).unwrap();
    // Every row version (an insert, update or delete changes the set), per table.
    let versions = |t: &str| {
        format!("SELECT COALESCE(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY ctid), '') FROM {t}")
    };
    let tables = ["organizations", "repositories", "api_keys", "org_members", "repository_grants"];
    let mut written_before = Vec::new();
    for t in tables {
        written_before.push(conn.query_one(&versions(t), &[]).await.unwrap().get::<_, String>(0));
    }
    let again = aerugo_operator::files::apply(db.clone(), &examples, secrets.path().to_owned(), settings(), false)
        .await
        .expect("again");
    assert!(again.iter().all(|o| o.ready));
    let after: (i64, i64, i64) = conn.query_one(counts, &[]).await.map(|r| (r.get(0), r.get(1), r.get(2))).unwrap();
    assert_eq!(before, after);
    let push_again: Secret =
        serde_saphyr::from_str(&std::fs::read_to_string(secrets.path().join("team/ci-push.yaml")).unwrap()).unwrap();
    assert_eq!(aerugo_operator::key::token_in(&push_again).unwrap(), token, "the key is generated once");
    for (t, before) in tables.iter().zip(written_before) {
        let now: String = conn.query_one(&versions(t), &[]).await.unwrap().get(0);
        assert_eq!(now, before, "a second run wrote to {t}");
    }
}

/// `--prune`: what an earlier apply declared and the directory lost is released by the reclaim
/// policy its rows remember; rows a cluster declared are never touched.
#[tokio::test]
async fn file_mode_prunes_what_the_directory_no_longer_holds() {
    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 4).expect("pool");
    aerugo_db::tenancy::create_user(&db.get().await.unwrap(), "admin", None, None, true, "system").await.unwrap();
    let conn = db.get().await.unwrap();
    // A cluster's organization (a random version 4 UID) beside the files'.
    let cluster_uid = uuid::Uuid::parse_str("6f1c1d2e-0000-4000-8000-0000000000c1").unwrap();
    let cluster_org = aerugo_db::declared::DeclaredOrg {
        uid: cluster_uid,
        namespace: "elsewhere",
        name: "clustered",
        display_name: None,
        quota_bytes: None,
        bucket: None,
        auto_create_repos: true,
        default_visibility: "private",
        reclaim_policy: "delete",
    };
    aerugo_db::declared::sync_org(&conn, &cluster_org).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let full = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/acme.yaml")).unwrap();
    let apply = |text: String| apply_files(db.clone(), dir.path().to_owned(), secrets.path().to_owned(), text);
    let first = apply(full.clone()).await;
    assert!(first.iter().all(|o| o.ready && !o.pruned), "{first:#?}");
    let key_of = |name: &str| aerugo_operator::files::file_uid("ApiKey", "team", name).parse::<uuid::Uuid>().unwrap();
    let live = |uid: uuid::Uuid| {
        let conn = &conn;
        async move {
            let n: i64 = conn
                .query_one("SELECT COUNT(*) FROM api_keys WHERE k8s_uid = $1 AND revoked_at IS NULL", &[&uid])
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(live(key_of("ci-push")).await, 1);

    // acme/tools (reclaimPolicy Delete) and the CI key leave the directory.
    let without: Vec<&str> = full
        .split("\n---\n")
        .filter(|doc| !doc.contains("\n  name: tools\n") && !doc.contains("\n  name: ci-push\n"))
        .collect();
    assert_eq!(without.len(), full.split("\n---\n").count() - 2);
    let second = apply(without.join("\n---\n")).await;
    let pruned: Vec<_> = second.iter().filter(|o| o.pruned).map(|o| (o.kind, o.message.as_str())).collect();
    assert_eq!(pruned, [("repository", "data deleted"), ("apikey", "keys revoked")], "{second:#?}");
    let repos = |name: &'static str| {
        let conn = &conn;
        async move {
            conn.query_opt("SELECT orphaned_at IS NOT NULL FROM repositories WHERE name = $1", &[&name])
                .await
                .unwrap()
                .map(|r| r.get::<_, bool>(0))
        }
    };
    assert_eq!(repos("acme/tools").await, None, "deleted by its reclaim policy");
    assert_eq!(repos("acme/team/app").await, Some(false));
    assert_eq!(live(key_of("ci-push")).await, 0, "the key is revoked");
    assert!(!secrets.path().join("team/ci-push.yaml").exists(), "its Secret manifest is gone");
    assert!(secrets.path().join("team/acme-pull.yaml").exists());

    // Everything leaves: Retain orphans the organization and the other repositories.
    let last = apply(String::new()).await;
    assert_eq!(last.iter().filter(|o| o.pruned).count(), 4, "{last:#?}");
    assert_eq!(repos("acme/team/app").await, Some(true), "orphaned, adoptable");
    let orgs: Vec<(String, bool)> = conn
        .query("SELECT name, orphaned_at IS NOT NULL FROM organizations ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(orgs, [("acme".to_owned(), true), ("clustered".to_owned(), false)], "a cluster's row is not pruned");
    // Applying again adopts what was retained.
    let back = apply(full).await;
    assert!(back.iter().all(|o| o.ready), "{back:#?}");
    assert_eq!(repos("acme/team/app").await, Some(false));
}

#[tokio::test]
async fn a_registry_becomes_a_data_plane_deployment() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    let h = start().await;
    for (name, data) in [
        ("db", json!({ "url": "postgres://db/aerugo" })),
        ("s3", json!({ "accessKeyId": "id", "secretAccessKey": "secret" })),
    ] {
        h.emulator
            .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name, "namespace": "team" }, "stringData": data }))
            .expect("secret");
    }
    let registry = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "metadata": { "name": "main" },
        "spec": {
            "replicas": 2, "image": "aerugo/dataplane:1", "host": "registry.example.com",
            "storage": { "endpoint": "http://s3.example:3900", "bucket": "blobs", "credentialsSecret": "s3", "manageBucket": false },
            "databaseSecret": { "name": "db" },
        },
    });
    create(&h, "team", registry).await;
    wait_reason::<aerugo_crds::Registry>(&h, "team", "main", "False", "MigrationPending").await;

    let get = |name: &str| h.emulator.get::<Deployment>(Some("team"), name);
    let deployment = get("main").expect("deployment");
    assert_eq!(deployment.spec.replicas, Some(2));
    assert_eq!(deployment.metadata.owner_references.as_ref().expect("owned")[0].kind, "Registry");
    assert!(h.emulator.get::<Service>(Some("team"), "main").is_some());
    assert!(h.emulator.get::<PodDisruptionBudget>(Some("team"), "main").is_some());
    let config = h.emulator.get::<ConfigMap>(Some("team"), "main-dataplane").expect("config");
    assert_eq!(config.data.as_ref().unwrap()["AERUGO_PUBLIC_URL"], "https://registry.example.com");
    let token_key = h.emulator.get::<Secret>(Some("team"), "main-token-key").expect("token key");
    let key_hex = String::from_utf8(token_key.data.as_ref().unwrap()["key"].0.clone()).unwrap();
    aerugo_auth::token::TokenKeys::from_hex(&key_hex, &[]).expect("a signing key the data plane loads");

    // No controllers run in the emulator: play the Job and Deployment controllers' part.
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "team");
    let job = jobs.list(&Default::default()).await.unwrap().items.into_iter().next().expect("migration job");
    let job_name = job.metadata.name.clone().unwrap();
    assert_eq!(
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.as_deref(),
        Some(&["migrate".to_owned()][..])
    );
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(json!({ "status": { "succeeded": 1 } })))
        .await
        .unwrap();
    wait_reason::<aerugo_crds::Registry>(&h, "team", "main", "False", "Progressing").await;
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "team");
    deployments
        .patch_status("main", &PatchParams::default(), &Patch::Merge(json!({ "status": { "readyReplicas": 2 } })))
        .await
        .unwrap();
    let ready: aerugo_crds::Registry = wait_reason(&h, "team", "main", "True", "Reconciled").await;
    let status = ready.status.unwrap();
    assert_eq!((status.ready_replicas, status.endpoint.as_deref()), (Some(2), Some("registry.example.com")));

    // Drift: a deleted child comes back; the signing key is never regenerated.
    let services: Api<Service> = Api::namespaced(h.client.clone(), "team");
    services.delete("main", &DeleteParams::default()).await.unwrap();
    h.emulator.wait_for::<Service, _>(Some("team"), "main", WAIT, |s| s.is_some()).await.expect("service recreated");
    // A new image: a new migration Job; autoscaling: an HPA owns the replica count.
    let api: Api<aerugo_crds::Registry> = Api::namespaced(h.client.clone(), "team");
    api.patch(
        "main",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "spec": { "image": "aerugo/dataplane:2", "autoscaling": { "minReplicas": 2, "maxReplicas": 5 } } }),
        ),
    )
    .await
    .unwrap();
    wait_reason::<aerugo_crds::Registry>(&h, "team", "main", "False", "MigrationPending").await;
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), 2);
    let hpa = h
        .emulator
        .wait_for::<HorizontalPodAutoscaler, _>(Some("team"), "main", WAIT, |a| a.is_some())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hpa.spec.max_replicas, 5);
    let deployment = get("main").unwrap();
    assert_eq!(deployment.spec.replicas, None, "the HPA owns the replica count");
    assert_eq!(deployment.spec.template.spec.unwrap().containers[0].image.as_deref(), Some("aerugo/dataplane:2"));
    let key_again = h.emulator.get::<Secret>(Some("team"), "main-token-key").unwrap();
    assert_eq!(key_again.data, token_key.data, "the signing key is kept");
}

#[tokio::test]
async fn keys_rotate_with_an_overlap() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    create(
        &h,
        "team",
        key("rotating", json!({ "organizationRef": { "name": "acme" }, "scopes": [{ "repositories": "*", "actions": ["Pull"] }], "rotateEvery": "3s", "rotationOverlap": "2s", "secretType": "Opaque" })),
    )
    .await;
    let first: ApiKey = wait_reason(&h, "team", "rotating", "True", "Reconciled").await;
    let first_id = first.status.and_then(|s| s.key_id).expect("keyId");
    let rotated = h
        .emulator
        .wait_for::<ApiKey, _>(Some("team"), "rotating", WAIT, |k| {
            k.and_then(|k| k.status.as_ref()).and_then(|s| s.key_id.as_deref()).is_some_and(|id| id != first_id)
        })
        .await
        .expect("rotated")
        .unwrap();
    let second_id = rotated.status.and_then(|s| s.key_id).unwrap();
    let secret = h.emulator.get::<Secret>(Some("team"), "rotating").unwrap();
    assert_eq!(
        aerugo_auth::apikey::parse(&aerugo_operator::key::token_in(&secret).unwrap()).unwrap().key_id,
        second_id
    );
    // The previous key works until the overlap ends, then not.
    let db = h.db.get().await.unwrap();
    let live =
        "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) FROM api_keys WHERE key_id = $1";
    let old_expiry: Option<time::OffsetDateTime> =
        db.query_one("SELECT expires_at FROM api_keys WHERE key_id = $1", &[&first_id]).await.unwrap().get(0);
    let old_expiry = old_expiry.expect("the previous key got an end");
    assert!(old_expiry > time::OffsetDateTime::now_utc() - time::Duration::seconds(3));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!db.query_one(live, &[&first_id]).await.unwrap().get::<_, bool>(0), "the overlap ended");
}

#[tokio::test]
async fn a_database_outage_is_reported_and_recovered_from() {
    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let pool = aerugo_db::pool(&url, 2).unwrap();
    aerugo_db::tenancy::create_user(&pool.get().await.unwrap(), "ada", None, None, false, "api").await.unwrap();
    let emulator = Emulator::new();
    emulator.install_crds_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")).expect("CRDs");
    emulator.seed(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "team" } })).unwrap();
    let client = emulator.client();
    // Nothing listens on port 9: every connection fails.
    let down = aerugo_db::pool("postgres://postgres@127.0.0.1:9/none", 2).expect("pool");
    let cluster = |db: aerugo_db::Pool| {
        let settings =
            Settings { registry_host: "r".into(), resync: Duration::from_secs(2), storage: None, pods_watched: false };
        ClusterContext::new(client.clone(), db, settings, Metrics::new(&prometheus::Registry::new()).expect("metrics"))
    };
    let running = tokio::spawn(controller::run(cluster(down)));
    let h = Harness { emulator: emulator.clone(), db: pool, client: client.clone() };
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "False", "DatabaseUnavailable").await;
    // The database is back (a new operator process would find it; here a second controller set).
    running.abort();
    tokio::spawn(controller::run(cluster(h.db.clone())));
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
}

/// Runs a Registry whose storage points at a real S3 service, and waits until the operator is
/// past the bucket (the migration Job is next).
async fn registry_on(h: &Harness, name: &str, storage: Value, access_key: &str, secret_key: &str) {
    h.emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-s3"), "namespace": "team" }, "stringData": { "accessKeyId": access_key, "secretAccessKey": secret_key } }))
        .expect("secret");
    let mut storage = storage;
    storage["credentialsSecret"] = json!(format!("{name}-s3"));
    let registry = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "metadata": { "name": name },
        "spec": { "image": "aerugo/dataplane:1", "storage": storage, "databaseSecret": { "name": "db" } },
    });
    create(h, "team", registry).await;
    wait_reason::<aerugo_crds::Registry>(h, "team", name, "False", "MigrationPending").await;
}

/// The Garage of `scripts/dev.sh test` (`AERUGO_S3_*`), or `None` (the test is skipped).
#[track_caller]
fn garage() -> Option<aerugo_storage::S3Config> {
    let endpoint = aerugo_test_support::service_env("AERUGO_S3_ENDPOINT")?;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    Some(aerugo_storage::S3Config {
        endpoint: Some(endpoint),
        bucket: String::new(),
        region: var("AERUGO_S3_REGION"),
        access_key_id: var("AERUGO_S3_ACCESS_KEY_ID"),
        secret_access_key: var("AERUGO_S3_SECRET_ACCESS_KEY"),
        path_style: true,
    })
}

#[tokio::test]
async fn the_registry_bucket_gets_a_lifecycle_rule_on_garage() {
    let Some(garage) = garage() else { return };
    let h = start().await;
    let bucket = format!("reg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let storage = json!({ "endpoint": garage.endpoint, "bucket": bucket, "region": garage.region, "pathStyle": true });
    registry_on(&h, "garage", storage, &garage.access_key_id, &garage.secret_access_key).await;
    let store = aerugo_storage::S3Store::new(&aerugo_storage::S3Config { bucket, ..garage });
    assert!(store.list_keys("").await.expect("the bucket exists").is_empty());
    assert!(!store.ensure_abort_incomplete_uploads(1).await.expect("lifecycle"), "the rule is already in place");
}

/// An Organization's dedicated bucket is created on the registry's S3 with the lifecycle rule;
/// a policy without the registry's principal is refused; the bucket cannot change once the
/// organization holds blobs.
#[tokio::test]
async fn an_organization_bucket_is_created_and_cannot_move_under_blobs() {
    let Some(garage) = garage() else { return };
    let access = aerugo_operator::context::StorageAccess::S3 {
        endpoint: garage.endpoint.clone().unwrap_or_default(),
        bucket: "aerugo".into(),
        region: garage.region.clone(),
        path_style: true,
        access_key_id: garage.access_key_id.clone(),
        secret_access_key: garage.secret_access_key.clone(),
        principal: None,
    };
    let h = start_on(Duration::from_secs(2), Some(access)).await;
    let bucket = format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    create(&h, "team", org("acme", json!({ "storage": { "bucket": bucket } }))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    let store = aerugo_storage::S3Store::new(&aerugo_storage::S3Config { bucket: bucket.clone(), ..garage });
    assert!(store.list_keys("").await.expect("the bucket exists").is_empty());
    assert!(!store.ensure_abort_incomplete_uploads(1).await.expect("lifecycle"), "the rule is already in place");
    let db = h.db.get().await.unwrap();
    let row: Option<String> =
        db.query_one("SELECT bucket FROM organizations WHERE name = 'acme'", &[]).await.unwrap().get(0);
    assert_eq!(row.as_deref(), Some(bucket.as_str()));

    // Readers need a bucket policy, and a policy the registry's principal.
    let strict = json!({ "storage": { "bucket": format!("{bucket}-x"), "readers": ["arn:aws:iam::2:root"] } });
    create(&h, "team", org("strict", strict)).await;
    let refused: Organization = wait_reason(&h, "team", "strict", "False", "InvalidSpec").await;
    assert!(serde_json::to_string(&refused.status).unwrap().contains("AERUGO_S3_PRINCIPAL"));
    let claims: i64 = db
        .query_one("SELECT COUNT(*) FROM bucket_claims WHERE bucket = $1", &[&format!("{bucket}-x")])
        .await
        .unwrap()
        .get(0);
    assert_eq!(claims, 0, "a refused organization holds no claim");

    // The registry's own bucket is no organization's.
    create(&h, "other", org("sneak", json!({ "storage": { "bucket": "aerugo" } }))).await;
    let refused: Organization = wait_reason(&h, "other", "sneak", "False", "InvalidSpec").await;
    assert!(serde_json::to_string(&refused.status).unwrap().contains("registry's own bucket"));

    // Once a repository of the organization holds a blob, the bucket stays.
    create(&h, "team", repo("app", json!({ "organizationRef": { "name": "acme" } }))).await;
    wait_reason::<Repository>(&h, "team", "app", "True", "Reconciled").await;
    db.batch_execute(&format!(
        "INSERT INTO blobs (digest, size) VALUES ('sha256:dd', 1);
         INSERT INTO blob_objects (digest, location, storage_key) VALUES ('sha256:dd', '{bucket}', 'k');
         INSERT INTO repository_blobs (repository_id, digest) SELECT id, 'sha256:dd' FROM repositories WHERE name = 'acme/app';"
    ))
    .await
    .unwrap();
    let orgs: Api<Organization> = Api::namespaced(h.client.clone(), "team");
    let moved = json!({ "spec": { "storage": { "bucket": format!("{bucket}-moved") } } });
    orgs.patch("acme", &PatchParams::default(), &Patch::Merge(&moved)).await.unwrap();
    let refused: Organization = wait_reason(&h, "team", "acme", "False", "InvalidSpec").await;
    assert!(serde_json::to_string(&refused.status).unwrap().contains("cannot change"));
    let row: Option<String> =
        db.query_one("SELECT bucket FROM organizations WHERE name = 'acme'", &[]).await.unwrap().get(0);
    assert_eq!(row.as_deref(), Some(bucket.as_str()), "the row keeps the bucket its blobs are in");
}

/// The collector deletes an object in a location no repository reading from it references,
/// keeps the blob while another location still needs it, and deletes the row last.
#[tokio::test]
async fn the_collector_works_per_location() {
    use aerugo_storage::BlobStore as _;

    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = aerugo_storage::AnyStore::Fs(aerugo_storage::FsStore::new(dir.path()).await.unwrap());
    let dedicated = store.location("dedicated-1").await.unwrap();
    let hex = "e".repeat(64);
    let key = format!("blobs/sha256/ee/{hex}");
    for root in [dir.path().to_owned(), dir.path().join("locations/dedicated-1")] {
        std::fs::create_dir_all(root.join("blobs/sha256/ee")).unwrap();
        std::fs::write(root.join(&key), b"layer").unwrap();
    }
    let conn = db.get().await.unwrap();
    // The blob is in both locations; only the default one's repository links it.
    conn.batch_execute(&format!(
        "INSERT INTO organizations (name) VALUES ('plain');
         INSERT INTO organizations (name, bucket) VALUES ('own', 'dedicated-1');
         INSERT INTO repositories (org_id, name) SELECT id, name || '/r' FROM organizations;
         INSERT INTO blobs (digest, size) VALUES ('sha256:{hex}', 5);
         INSERT INTO blob_objects (digest, location, storage_key) VALUES ('sha256:{hex}', '', '{key}'), ('sha256:{hex}', 'dedicated-1', '{key}');
         INSERT INTO repository_blobs (repository_id, digest) SELECT id, 'sha256:{hex}' FROM repositories WHERE name = 'plain/r';
         INSERT INTO gc_blob_review_queue (digest, review_after, event) VALUES ('sha256:{hex}', now() - interval '1 minute', 'test');"
    ))
    .await
    .unwrap();
    let collected = aerugo_operator::collector::collect(&db, &store, gc(10)).await.expect("collect");
    assert_eq!((collected.reviewed, collected.deleted), (1, 1));
    assert_eq!(dedicated.size(&key).await.unwrap(), None, "the dedicated location's object is gone");
    assert_eq!(store.size(&key).await.unwrap(), Some(5), "the linked location's object stays");
    let locations: Vec<String> =
        conn.query("SELECT location FROM blob_objects", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(locations, [""]);
    // Unlinked everywhere (the trigger queues it; its review is brought forward): all goes.
    conn.batch_execute(
        "DELETE FROM repository_blobs; UPDATE gc_blob_review_queue SET review_after = now() - interval '1 minute';",
    )
    .await
    .unwrap();
    let collected = aerugo_operator::collector::collect(&db, &store, gc(10)).await.expect("collect");
    assert_eq!((collected.reviewed, collected.deleted), (1, 1));
    assert_eq!(store.size(&key).await.unwrap(), None);
    let rows: i64 = conn.query_one("SELECT COUNT(*) FROM blobs", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "the blob row goes once no location holds it");
}

#[tokio::test]
async fn the_registry_bucket_policy_is_kept_on_moto() {
    let Some(endpoint) = aerugo_test_support::service_env("AERUGO_TEST_MOTO_ENDPOINT") else { return };
    let h = start().await;
    let bucket = format!("reg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let policy = json!({ "principal": "arn:aws:iam::123456789012:user/registry", "readers": ["arn:aws:iam::210987654321:root"], "denyInsecureTransport": true });
    let storage = json!({ "endpoint": endpoint, "bucket": bucket, "pathStyle": true, "policy": policy });
    registry_on(&h, "moto", storage, "testing", "testing").await;
    let store = aerugo_storage::S3Store::new(&aerugo_storage::S3Config {
        endpoint: Some(endpoint),
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        path_style: true,
    });
    let stored: Value = serde_json::from_str(&store.policy().await.expect("policy").expect("a policy")).unwrap();
    let declared: aerugo_crds::registry::BucketPolicy = serde_json::from_value(policy).unwrap();
    assert_eq!(stored, aerugo_operator::bucket::desired_policy(&bucket, &declared));
    // Drift: a policy changed behind the operator's back is put back on the next resync.
    store.put_policy(r#"{"Version":"2012-10-17","Statement":[]}"#).await.expect("tamper");
    let mut restored = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: Value = serde_json::from_str(&store.policy().await.unwrap().unwrap()).unwrap();
        if now == stored {
            restored = true;
            break;
        }
    }
    assert!(restored, "the policy was restored");
}

#[tokio::test]
async fn reclaim_delete_removes_rows_and_queues_unreferenced_blobs() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    for name in ["doomed", "kept"] {
        create(&h, "team", repo(name, json!({ "organizationRef": { "name": "acme" }, "reclaimPolicy": "Delete" })))
            .await;
        wait_reason::<Repository>(&h, "team", name, "True", "Reconciled").await;
    }
    // Two blobs in `doomed`, one of them shared with `kept`.
    let db = h.db.get().await.unwrap();
    db.batch_execute(
        "INSERT INTO blobs (digest, size) VALUES ('sha256:aa', 10), ('sha256:bb', 20);
         INSERT INTO blob_objects (digest, location, storage_key) VALUES ('sha256:aa', '', 'k/aa'), ('sha256:bb', '', 'k/bb');
         INSERT INTO repository_blobs (repository_id, digest) SELECT id, 'sha256:aa' FROM repositories WHERE name = 'acme/doomed';
         INSERT INTO repository_blobs (repository_id, digest) SELECT id, 'sha256:bb' FROM repositories WHERE name IN ('acme/doomed', 'acme/kept');",
    )
    .await
    .unwrap();
    let repos: Api<Repository> = Api::namespaced(h.client.clone(), "team");
    repos.delete("doomed", &DeleteParams::default()).await.unwrap();
    h.emulator.wait_for::<Repository, _>(Some("team"), "doomed", WAIT, |r| r.is_none()).await.expect("finalized");
    let gone: i64 =
        db.query_one("SELECT COUNT(*) FROM repositories WHERE name = 'acme/doomed'", &[]).await.unwrap().get(0);
    assert_eq!(gone, 0, "Delete removes the row");
    let queued: Vec<String> = db
        .query("SELECT digest FROM gc_blob_review_queue ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(queued.contains(&"sha256:aa".to_owned()), "the unreferenced blob waits for the collector: {queued:?}");
    let shared: i64 =
        db.query_one("SELECT COUNT(*) FROM repository_blobs WHERE digest = 'sha256:bb'", &[]).await.unwrap().get(0);
    assert_eq!(shared, 1, "the blob another repository references stays linked there");
}

#[tokio::test]
async fn storage_down_stops_a_registry_before_its_children() {
    use k8s_openapi::api::apps::v1::Deployment;
    let h = start().await;
    h.emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s3", "namespace": "team" }, "stringData": { "accessKeyId": "a", "secretAccessKey": "b" } }))
        .unwrap();
    let registry = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "metadata": { "name": "main" },
        "spec": { "image": "aerugo/dataplane:1", "databaseSecret": { "name": "db" },
                  "storage": { "endpoint": "http://127.0.0.1:9", "bucket": "blobs", "credentialsSecret": "s3" } },
    });
    create(&h, "team", registry).await;
    let down: aerugo_crds::Registry = wait_reason(&h, "team", "main", "False", "StorageUnavailable").await;
    assert!(down.status.unwrap().conditions[0].message.contains("HeadBucket"));
    assert!(h.emulator.get::<Deployment>(Some("team"), "main").is_none(), "nothing deployed without its storage");
}

#[tokio::test]
async fn one_replica_leads_at_a_time() {
    use aerugo_operator::leader::Leadership;
    use k8s_openapi::api::coordination::v1::Lease;

    let emulator = Emulator::new();
    let client = emulator.client();
    let first =
        Leadership::acquire(client.clone(), "default", "aerugo-operator", "replica-a").await.expect("first leads");
    // The second waits while the first holds the lease.
    let second = tokio::spawn(Leadership::acquire(client.clone(), "default", "aerugo-operator", "replica-b"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!second.is_finished(), "a held lease is not taken");
    // The first loses it (another holder wrote it): `hold` returns and the caller stops.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases
        .patch(
            "aerugo-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "holderIdentity": "replica-c" } })),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), first.hold()).await.expect("the first notices it lost the lease");
    // Once the lease is released, the waiting replica takes it.
    leases.delete("aerugo-operator", &DeleteParams::default()).await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_secs(20), second).await.expect("the second leads").unwrap().expect("lease");
    drop(second);
    let lease = h_lease(&emulator);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
}

fn h_lease(emulator: &Emulator) -> Value {
    emulator.get_raw("coordination.k8s.io/v1", "leases", Some("default"), "aerugo-operator").expect("lease")
}

#[tokio::test]
async fn the_collector_deletes_unreferenced_blobs_after_their_review() {
    use aerugo_storage::BlobStore as _;

    let url = aerugo_db::testing::fresh_database().await.expect("database");
    let db = aerugo_db::pool(&url, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = aerugo_storage::AnyStore::Fs(aerugo_storage::FsStore::new(dir.path()).await.unwrap());
    let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let key = |c: char| format!("blobs/sha256/{c}{c}/{}", hex(c));
    for c in ['a', 'b', 'c'] {
        let path = dir.path().join(key(c));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"layer").unwrap();
    }
    let conn = db.get().await.unwrap();
    // `a` is unreferenced and due; `b` is due but a repository links it again; `c` is not due.
    conn.batch_execute(&format!(
        "INSERT INTO organizations (name) VALUES ('o');
         INSERT INTO repositories (org_id, name) SELECT id, 'o/r' FROM organizations;
         INSERT INTO blobs (digest, size) VALUES ('sha256:{a}', 5), ('sha256:{b}', 5), ('sha256:{c}', 5);
         INSERT INTO blob_objects (digest, location, storage_key)
             VALUES ('sha256:{a}', '', '{ka}'), ('sha256:{b}', '', '{kb}'), ('sha256:{c}', '', '{kc}');
         INSERT INTO repository_blobs (repository_id, digest) SELECT id, 'sha256:{b}' FROM repositories;
         INSERT INTO gc_blob_review_queue (digest, review_after, event) VALUES
             ('sha256:{a}', now() - interval '1 minute', 'test'), ('sha256:{b}', now() - interval '1 minute', 'test'),
             ('sha256:{c}', now() + interval '1 day', 'test');",
        a = hex('a'),
        b = hex('b'),
        c = hex('c'),
        ka = key('a'),
        kb = key('b'),
        kc = key('c'),
    ))
    .await
    .unwrap();
    let collected = aerugo_operator::collector::collect(&db, &store, gc(1)).await.expect("collect");
    assert_eq!((collected.reviewed, collected.deleted), (2, 1));
    assert_eq!(store.size(&key('a')).await.unwrap(), None, "the unreferenced object is gone");
    assert_eq!(store.size(&key('b')).await.unwrap(), Some(5), "a referenced blob stays");
    assert_eq!(store.size(&key('c')).await.unwrap(), Some(5), "a blob still in review stays");
    let rows: Vec<String> =
        conn.query("SELECT digest FROM blobs ORDER BY 1", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows, [format!("sha256:{}", hex('b')), format!("sha256:{}", hex('c'))]);
    let queued: Vec<String> = conn
        .query(
            "SELECT digest FROM gc_blob_review_queue WHERE review_after > now() + interval '23 hours' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // `b`'s link is a day younger than the review delay and no manifest references it (an
    // upload whose manifest has not come yet): its entry waits until the link is a day old.
    assert_eq!(queued, [format!("sha256:{}", hex('b')), format!("sha256:{}", hex('c'))]);
}

#[tokio::test]
async fn grants_follow_a_key_rotation() {
    // No resync within the test: only the ApiKey watch can move the grant.
    let h = start_with(Duration::from_secs(300)).await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    create(
        &h,
        "team",
        key("puller", json!({ "organizationRef": { "name": "acme" }, "scopes": [{ "repositories": "*", "actions": ["Pull"] }], "secretType": "Opaque" })),
    )
    .await;
    wait_reason::<ApiKey>(&h, "team", "puller", "True", "Reconciled").await;
    create(&h, "team", repo("app", json!({ "organizationRef": { "name": "acme" }, "grants": [{ "apiKeyRef": { "name": "puller" }, "access": "Pull" }] }))).await;
    wait_reason::<Repository>(&h, "team", "app", "True", "Reconciled").await;
    let granted = |db: aerugo_db::Pool| async move {
        let conn = db.get().await.unwrap();
        conn.query(
            "SELECT k.key_id FROM repository_grants g JOIN api_keys k ON k.id = g.subject_id WHERE g.subject_kind = 'api_key' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };
    // Let the Repository settle (its own status write causes one more reconcile).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = granted(h.db.clone()).await;
    assert_eq!(before.len(), 1);
    // The key's Secret is lost: a new key replaces the old one, and the grant moves with it.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "team");
    secrets.delete("puller", &DeleteParams::default()).await.unwrap();
    let mut moved = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        moved = granted(h.db.clone()).await;
        if moved.len() == 1 && moved != before {
            break;
        }
    }
    assert!(moved.len() == 1 && moved != before, "the grant follows the new key: {before:?} → {moved:?}");
}

/// A dedicated bucket is one organization's: another organization (any namespace) naming it,
/// or a Registry storing its blobs there, is refused before anything touches the bucket; the
/// claim is given up when its organization lets the bucket go.
#[tokio::test]
async fn a_bucket_is_claimed_by_one_organization_only() {
    let h = start_on(Duration::from_secs(2), Some(aerugo_operator::context::StorageAccess::File)).await;
    create(&h, "team", org("acme", json!({ "storage": { "bucket": "acme-blobs" } }))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    create(&h, "other", org("thief", json!({ "storage": { "bucket": "acme-blobs" } }))).await;
    let taken: Organization = wait_reason(&h, "other", "thief", "False", "BucketTaken").await;
    let message = serde_json::to_string(&taken.status).unwrap();
    assert!(message.contains(r#"organization \"acme\" (namespace \"team\")"#), "{message}");
    let db = h.db.get().await.unwrap();
    let thief: i64 = db.query_one("SELECT COUNT(*) FROM organizations WHERE name = 'thief'", &[]).await.unwrap().get(0);
    assert_eq!(thief, 0, "nothing of a refused organization is written");
    let holder: String = db
        .query_one(
            "SELECT o.name FROM bucket_claims c JOIN organizations o ON o.id = c.org_id WHERE c.bucket = 'acme-blobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, "acme");
    // A Registry cannot store its blobs in an organization's bucket.
    let registry = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "metadata": { "name": "shared" },
        "spec": { "image": "aerugo/dataplane:1", "storage": { "endpoint": "http://127.0.0.1:9", "bucket": "acme-blobs", "credentialsSecret": "s3" }, "databaseSecret": { "name": "db" } },
    });
    create(&h, "team", registry).await;
    wait_reason::<aerugo_crds::Registry>(&h, "team", "shared", "False", "BucketTaken").await;
    // The Registry goes first: it would otherwise race the other organization for the bucket
    // acme lets go (whichever resyncs first claims it).
    let registries: Api<aerugo_crds::Registry> = Api::namespaced(h.client.clone(), "team");
    registries.delete("shared", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while registries.get_opt("shared").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the Registry was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // acme gives its bucket up (no blobs yet): the other organization gets it.
    let orgs: Api<Organization> = Api::namespaced(h.client.clone(), "team");
    orgs.patch("acme", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "storage": null } }))).await.unwrap();
    wait_reason::<Organization>(&h, "other", "thief", "True", "Reconciled").await;
}

/// A Secret the ApiKey does not own is never written or deleted: the key reports
/// `SecretConflict` and the Secret keeps its data through the key's deletion.
#[tokio::test]
async fn an_api_key_never_overwrites_a_secret_it_does_not_own() {
    let h = start().await;
    h.emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "db-password", "namespace": "team" }, "stringData": { "password": "hunter2" } }))
        .expect("secret");
    create(&h, "team", org("acme", json!({}))).await;
    let spec = json!({ "organizationRef": { "name": "acme" }, "secretName": "db-password", "scopes": [{ "repositories": "**", "actions": ["Pull"] }] });
    create(&h, "team", key("grab", spec)).await;
    let conflict: ApiKey = wait_reason(&h, "team", "grab", "False", "SecretConflict").await;
    assert!(serde_json::to_string(&conflict.status).unwrap().contains("db-password"));
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "team");
    let untouched = secrets.get("db-password").await.unwrap();
    assert_eq!(untouched.data.unwrap()["password"].0, b"hunter2");
    let keys: i64 = h.db.get().await.unwrap().query_one("SELECT COUNT(*) FROM api_keys", &[]).await.unwrap().get(0);
    assert_eq!(keys, 0, "no key is minted for a Secret that cannot hold it");
    // Its own Secret is written as before; deleting the key removes only that one.
    let spec =
        json!({ "organizationRef": { "name": "acme" }, "scopes": [{ "repositories": "**", "actions": ["Pull"] }] });
    create(&h, "team", key("own", spec)).await;
    wait_reason::<ApiKey>(&h, "team", "own", "True", "Reconciled").await;
    let keys: Api<ApiKey> = Api::namespaced(h.client.clone(), "team");
    for name in ["grab", "own"] {
        keys.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    while secrets.get_opt("own").await.unwrap().is_some() || keys.get_opt("grab").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the keys were not cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = secrets.get("db-password").await.expect("the foreign Secret survives the key's deletion");
    assert_eq!(kept.data.unwrap()["password"].0, b"hunter2");
}

/// A bucket policy someone else wrote is never replaced: the Registry waits with
/// `BucketPolicyConflict` and the policy stays as it was.
#[tokio::test]
async fn a_foreign_bucket_policy_is_never_overwritten() {
    let Some(endpoint) = aerugo_test_support::service_env("AERUGO_TEST_MOTO_ENDPOINT") else { return };
    let h = start().await;
    let bucket = format!("theirs-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store = aerugo_storage::S3Store::new(&aerugo_storage::S3Config {
        endpoint: Some(endpoint.clone()),
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        path_style: true,
    });
    store.ensure_bucket().await.expect("bucket");
    let theirs = json!({ "Version": "2012-10-17", "Statement": [{ "Sid": "Backups", "Effect": "Allow", "Principal": { "AWS": ["arn:aws:iam::999999999999:root"] }, "Action": ["s3:GetObject"], "Resource": [format!("arn:aws:s3:::{bucket}/*")] }] });
    store.put_policy(&theirs.to_string()).await.expect("their policy");
    h.emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "moto-s3", "namespace": "team" }, "stringData": { "accessKeyId": "testing", "secretAccessKey": "testing" } }))
        .expect("secret");
    let policy = json!({ "principal": "arn:aws:iam::123456789012:user/registry" });
    let registry = json!({
        "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "metadata": { "name": "moto" },
        "spec": { "image": "aerugo/dataplane:1", "storage": { "endpoint": endpoint, "bucket": bucket, "pathStyle": true, "policy": policy, "credentialsSecret": "moto-s3" }, "databaseSecret": { "name": "db" } },
    });
    create(&h, "team", registry).await;
    wait_reason::<aerugo_crds::Registry>(&h, "team", "moto", "False", "BucketPolicyConflict").await;
    let stored: Value = serde_json::from_str(&store.policy().await.unwrap().unwrap()).unwrap();
    assert_eq!(stored, theirs, "their policy is left as it was");
}

/// A Repository's retention runs when it reconciles: a dry run reports in `status.retention`
/// and an Event what would go and deletes nothing; Enforce deletes exactly that; a tag whose
/// digest a Pod runs (seen by the Pod watcher) is kept whatever the policy says.
#[tokio::test]
async fn retention_reports_plans_enforces_them_and_spares_what_pods_run() {
    let h = start().await;
    create(&h, "team", org("acme", json!({}))).await;
    wait_reason::<Organization>(&h, "team", "acme", "True", "Reconciled").await;
    let policy = json!({ "organizationRef": { "name": "acme" }, "retention": { "mode": "DryRun", "keepLast": 0 } });
    create(&h, "team", repo("app", policy)).await;
    wait_reason::<Repository>(&h, "team", "app", "True", "Reconciled").await;
    // Three tags, t1 the newest; a Pod runs t1's digest.
    let db = h.db.get().await.unwrap();
    db.batch_execute(
        "INSERT INTO manifests (repository_id, digest, media_type, payload, total_size)
         SELECT r.id, 'sha256:' || repeat(v.c, 64), 'application/vnd.oci.image.manifest.v1+json', '\\x7b7d', 2
           FROM repositories r, (VALUES ('1'), ('2'), ('3')) AS v(c) WHERE r.name = 'acme/app';
         INSERT INTO tags (repository_id, name, manifest_id, updated_at)
         SELECT repository_id, 't' || substr(digest, 8, 1), id, now() - substr(digest, 8, 1)::int * interval '1 minute'
           FROM manifests;",
    )
    .await
    .unwrap();
    let running = format!("sha256:{}", "1".repeat(64));
    h.emulator
        .seed(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web", "namespace": "team" },
            "spec": { "containers": [{ "name": "app", "image": format!("registry.test:5000/acme/app@{running}") }] },
        }))
        .unwrap();
    tokio::spawn(aerugo_operator::pods::protect(h.client.clone(), h.db.clone()));
    let retention = |r: Option<&Repository>| r.and_then(|r| r.status.as_ref()?.retention.clone());
    let dry = h
        .emulator
        .wait_for::<Repository, _>(Some("team"), "app", WAIT, |r| retention(r).is_some_and(|s| s.protected_in_use == 1))
        .await;
    let in_use: i64 = db.query_one("SELECT count(*) FROM digests_in_use", &[]).await.unwrap().get(0);
    let dry = dry.unwrap_or_else(|e| {
        let now = h.emulator.get_raw("aerugo.io/v1alpha1", "repositories", Some("team"), "app");
        panic!("no dry run seeing the Pod ({e:?}; {in_use} digests in use): {now:#?}")
    });
    let dry = retention(dry.as_ref()).unwrap();
    assert_eq!((dry.tags, dry.first_tags.clone(), dry.deleted), (2, vec!["t2".to_owned(), "t3".to_owned()], 0));
    assert_eq!(tags(&db).await, ["t1", "t2", "t3"], "a dry run deletes nothing");
    let events = |reason: &str| {
        h.emulator.list_raw("events.k8s.io/v1", "events", Some("team")).iter().filter(|e| e["reason"] == reason).count()
    };
    for _ in 0..100 {
        if events("RetentionDryRun") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events("RetentionDryRun"), 1, "one Event for the plan, not one per resync");

    let repos: Api<Repository> = Api::namespaced(h.client.clone(), "team");
    let enforce = json!({ "spec": { "retention": { "mode": "Enforce", "keepLast": 0 } } });
    repos.patch("app", &PatchParams::default(), &Patch::Merge(&enforce)).await.unwrap();
    h.emulator
        .wait_for::<Repository, _>(Some("team"), "app", WAIT, |r| retention(r).is_some_and(|s| s.deleted == 2))
        .await
        .expect("enforced");
    assert_eq!(tags(&db).await, ["t1"], "what the dry run reported went; the Pod's tag stayed");
    for _ in 0..100 {
        if events("RetentionEnforced") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events("RetentionEnforced"), 1);
    let queued: i64 = db.query_one("SELECT count(*) FROM gc_manifest_review_queue", &[]).await.unwrap().get(0);
    assert_eq!(queued, 2, "the untagged manifests wait for the collector");
}

async fn tags(db: &aerugo_db::PooledClient) -> Vec<String> {
    db.query("SELECT name FROM tags ORDER BY name", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}
