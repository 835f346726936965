//! The store's API-server semantics, one behaviour an operator depends on per test.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use aerugo_kube_emulator::{
    DeleteOptions, EventType, ListOptions, PatchKind, ResourceType, Store, Subresource, WriteOptions,
};

const W: &WriteOptions = &WriteOptions { field_manager: None, dry_run: false, force: false };
use serde_json::{Value, json};

fn namespaces() -> ResourceType {
    ResourceType {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
        namespaced: false,
        status_subresource: false,
        custom: false,
        ..Default::default()
    }
}

fn orgs() -> ResourceType {
    ResourceType {
        group: "aerugo.io".into(),
        version: "v1alpha1".into(),
        kind: "Organization".into(),
        plural: "organizations".into(),
        namespaced: true,
        status_subresource: true,
        custom: true,
        ..Default::default()
    }
}

fn secrets() -> ResourceType {
    ResourceType {
        group: String::new(),
        version: "v1".into(),
        kind: "Secret".into(),
        plural: "secrets".into(),
        namespaced: true,
        status_subresource: false,
        custom: false,
        ..Default::default()
    }
}

fn store() -> Store {
    let mut s = Store::new(vec![namespaces(), orgs(), secrets()], 100);
    s.create(&namespaces(), "", json!({ "metadata": { "name": "team" } }), W).expect("namespace");
    s
}

fn org(name: &str) -> Value {
    json!({ "metadata": { "name": name, "labels": { "tier": "gold" } }, "spec": { "displayName": "Acme" }, "status": { "orgId": 7 } })
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().expect("rv").parse().expect("number")
}

#[test]
fn create_sets_metadata_drops_status_and_needs_the_namespace() {
    let mut s = store();
    let created = s.create(&orgs(), "team", org("acme"), W).expect("create");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["namespace"], "team");
    assert_eq!(created["apiVersion"], "aerugo.io/v1alpha1");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(created.get("status").is_none(), "status is dropped on create when it is a subresource");
    assert_eq!(rv(&created), s.resource_version());
    assert_eq!(s.create(&orgs(), "team", org("acme"), W).expect_err("duplicate").code, 409);
    let missing = s.create(&orgs(), "nowhere", org("x"), W).expect_err("no namespace");
    assert_eq!((missing.code, missing.message.as_str()), (404, "namespaces \"nowhere\" not found"));
    let generated =
        s.create(&secrets(), "team", json!({ "metadata": { "generateName": "pull-" } }), W).expect("generateName");
    assert!(generated["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("pull-") && n.len() == 10));
}

#[test]
fn generation_moves_with_the_spec_only_and_status_is_a_subresource() {
    let mut s = store();
    let created = s.create(&orgs(), "team", org("acme"), W).expect("create");
    let mut labelled = created.clone();
    labelled["metadata"]["labels"]["extra"] = json!("x");
    let after_labels = s.replace(&orgs(), "team", "acme", labelled, Subresource::Main, W).expect("labels");
    assert_eq!(after_labels["metadata"]["generation"], 1, "labels do not bump generation");
    assert!(rv(&after_labels) > rv(&created));

    let status = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Merge,
            &json!({ "status": { "orgId": 42 }, "spec": { "displayName": "ignored" } }),
            Subresource::Status,
            W,
        )
        .expect("status");
    assert_eq!(status["status"]["orgId"], 42);
    assert_eq!(status["spec"]["displayName"], "Acme", "a status write changes only .status");
    assert_eq!(status["metadata"]["generation"], 1, "status writes never bump generation");

    let spec = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Merge,
            &json!({ "spec": { "displayName": "ACME" }, "status": { "orgId": 0 } }),
            Subresource::Main,
            W,
        )
        .expect("spec");
    assert_eq!(spec["metadata"]["generation"], 2);
    assert_eq!(spec["status"]["orgId"], 42, "the main resource ignores .status");

    // Writing the same thing again writes nothing.
    let again = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Merge,
            &json!({ "spec": { "displayName": "ACME" } }),
            Subresource::Main,
            W,
        )
        .expect("no-op");
    assert_eq!(rv(&again), rv(&spec));
}

#[test]
fn stale_and_missing_resource_versions() {
    let mut s = store();
    let created = s.create(&orgs(), "team", org("acme"), W).expect("create");
    let mut first = created.clone();
    first["spec"]["displayName"] = json!("one");
    s.replace(&orgs(), "team", "acme", first, Subresource::Main, W).expect("first writer");
    let mut stale = created.clone();
    stale["spec"]["displayName"] = json!("two");
    let conflict = s.replace(&orgs(), "team", "acme", stale, Subresource::Main, W).expect_err("stale");
    assert_eq!((conflict.code, conflict.reason), (409, "Conflict"));
    let mut unconditional = created;
    unconditional["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    assert_eq!(
        s.replace(&orgs(), "team", "acme", unconditional, Subresource::Main, W).expect_err("CR needs rv").code,
        422
    );
    let precondition = s.patch(
        &orgs(),
        "team",
        "acme",
        PatchKind::Merge,
        &json!({ "metadata": { "resourceVersion": "1" } }),
        Subresource::Main,
        W,
    );
    assert_eq!(precondition.expect_err("precondition").code, 409);
    // Built-ins accept an update without resourceVersion.
    s.create(&secrets(), "team", json!({ "metadata": { "name": "s" }, "data": {} }), W).expect("secret");
    s.replace(
        &secrets(),
        "team",
        "s",
        json!({ "metadata": { "name": "s" }, "data": { "k": "dg==" } }),
        Subresource::Main,
        W,
    )
    .expect("unconditional on a built-in");
}

#[test]
fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let mut s = store();
    let mut o = org("acme");
    o["metadata"]["finalizers"] = json!(["aerugo.io/cleanup"]);
    s.create(&orgs(), "team", o, W).expect("create");
    let marked = s.delete(&orgs(), "team", "acme", &DeleteOptions::default()).expect("delete");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["generation"], 2, "marking for deletion bumps generation");
    assert_eq!(
        s.delete(&orgs(), "team", "acme", &DeleteOptions::default()).expect("again"),
        marked,
        "a second delete is a no-op"
    );
    let added = s.patch(
        &orgs(),
        "team",
        "acme",
        PatchKind::Json,
        &json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": "other" }]),
        Subresource::Main,
        W,
    );
    assert_eq!(added.expect_err("no new finalizers").code, 422);
    // kube-runtime's finalizer removal: test the list, then remove the entry.
    let removed = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Json,
            &json!([
                { "op": "test", "path": "/metadata/finalizers", "value": ["aerugo.io/cleanup"] },
                { "op": "remove", "path": "/metadata/finalizers/0" }
            ]),
            Subresource::Main,
            W,
        )
        .expect("remove finalizer");
    assert_eq!(removed["metadata"]["name"], "acme");
    assert_eq!(s.get(&orgs(), "team", "acme").expect_err("gone").code, 404);
    let events = s.events_since(&orgs(), Some("team"), 0).expect("history");
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::Added, EventType::Modified, EventType::Deleted]);
    assert!(events.windows(2).all(|w| w[0].resource_version < w[1].resource_version));
}

#[test]
fn json_patch_test_of_null_on_a_missing_path_succeeds() {
    let mut s = store();
    s.create(&orgs(), "team", org("acme"), W).expect("create");
    // kube-runtime adds the first finalizer with exactly this patch.
    let added = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Json,
            &json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": ["aerugo.io/cleanup"] }
            ]),
            Subresource::Main,
            W,
        )
        .expect("null test on a missing path");
    assert_eq!(added["metadata"]["finalizers"], json!(["aerugo.io/cleanup"]));
    let failed = s.patch(
        &orgs(),
        "team",
        "acme",
        PatchKind::Json,
        &json!([{ "op": "test", "path": "/spec/displayName", "value": "nope" }]),
        Subresource::Main,
        W,
    );
    assert_eq!(failed.expect_err("failed test").code, 422);
    let smp = s.patch(&orgs(), "team", "acme", PatchKind::Strategic, &json!({}), Subresource::Main, W);
    assert_eq!(smp.expect_err("no SMP on a CR").code, 415);
}

#[test]
fn lists_filter_paginate_and_report_the_resource_version() {
    let mut s = store();
    s.create(&namespaces(), "", json!({ "metadata": { "name": "other" } }), W).expect("ns");
    for (ns, name, tier) in
        [("team", "a", "gold"), ("team", "b", "free"), ("team", "c", "gold"), ("other", "d", "gold")]
    {
        let mut o = org(name);
        o["metadata"]["labels"]["tier"] = json!(tier);
        s.create(&orgs(), ns, o, W).expect("create");
    }
    let gold = ListOptions { label_selector: Some("tier=gold".into()), ..ListOptions::default() };
    let names =
        |items: &[Value]| items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&s.list(&orgs(), Some("team"), &gold).expect("list").items), ["a", "c"]);
    assert_eq!(names(&s.list(&orgs(), None, &gold).expect("all namespaces").items), ["d", "a", "c"]);
    let page = s.list(&orgs(), None, &ListOptions { limit: 2, ..ListOptions::default() }).expect("page");
    assert_eq!(names(&page.items), ["d", "a"]);
    assert_eq!(page.resource_version, s.resource_version());
    let next = s
        .list(
            &orgs(),
            None,
            &ListOptions { limit: 2, continue_token: page.continue_token.clone(), ..ListOptions::default() },
        )
        .expect("next page");
    assert_eq!(names(&next.items), ["b", "c"]);
    assert_eq!(next.continue_token, None);
    let by_name = ListOptions { field_selector: Some("metadata.name=b".into()), ..ListOptions::default() };
    assert_eq!(names(&s.list(&orgs(), None, &by_name).expect("field").items), ["b"]);
    let bad = ListOptions { field_selector: Some("spec.displayName=x".into()), ..ListOptions::default() };
    assert_eq!(s.list(&orgs(), None, &bad).expect_err("unsupported field").code, 400);
    s.compact();
    let stale =
        s.list(&orgs(), None, &ListOptions { limit: 2, continue_token: page.continue_token, ..ListOptions::default() });
    assert_eq!(stale.expect_err("compacted").code, 410);
}

#[test]
fn watch_history_is_bounded_and_expires() {
    let mut s = Store::new(vec![namespaces(), secrets()], 3);
    s.create(&namespaces(), "", json!({ "metadata": { "name": "team" } }), W).expect("ns");
    let start = s.resource_version();
    for i in 0..5 {
        s.create(&secrets(), "team", json!({ "metadata": { "name": format!("s{i}") } }), W).expect("secret");
    }
    assert_eq!(s.events_since(&secrets(), None, start).expect_err("history too short").code, 410);
    let recent = s.events_since(&secrets(), Some("team"), s.resource_version() - 2).expect("recent");
    assert_eq!(recent.len(), 2);
    let deleted = s.delete(&secrets(), "team", "s4", &DeleteOptions::default()).expect("delete");
    assert_eq!(rv(&deleted), s.resource_version(), "a deletion carries a new resourceVersion");
    assert_eq!(
        s.delete(
            &secrets(),
            "team",
            "s3",
            &DeleteOptions { uid: Some(String::from("wrong-uid")), resource_version: None, dry_run: false }
        )
        .expect_err("precondition")
        .code,
        409
    );
}

#[test]
fn custom_resources_are_pruned_defaulted_and_validated_on_every_write() {
    let mut s = store();
    s.set_schema(
        &orgs(),
        json!({
            "type": "object",
            "properties": {
                "spec": { "type": "object", "required": ["displayName"], "properties": {
                    "displayName": { "type": "string", "minLength": 1 },
                    "autoCreateRepositories": { "type": "boolean", "default": true }
                } },
                "status": { "type": "object", "properties": { "orgId": { "type": "integer" } } }
            }
        }),
    );
    let mut o = org("acme");
    o["spec"]["typo"] = json!("x");
    let created = s.create(&orgs(), "team", o, W).expect("create");
    assert!(created["spec"].get("typo").is_none());
    assert_eq!(created["spec"]["autoCreateRepositories"], true);
    let status = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Merge,
            &json!({ "status": { "orgId": 1, "undeclared": 2 } }),
            Subresource::Status,
            W,
        )
        .expect("status");
    assert_eq!(status["status"], json!({ "orgId": 1 }), "undeclared status fields vanish, as in a cluster");
    let invalid = s
        .patch(
            &orgs(),
            "team",
            "acme",
            PatchKind::Merge,
            &json!({ "spec": { "displayName": "" } }),
            Subresource::Main,
            W,
        )
        .expect_err("invalid");
    assert_eq!((invalid.code, invalid.reason), (422, "Invalid"));
    assert_eq!(invalid.status()["details"]["causes"][0]["field"], "spec.displayName");
    let missing =
        s.create(&orgs(), "team", json!({ "metadata": { "name": "b" }, "spec": {} }), W).expect_err("required");
    assert_eq!(missing.status()["details"]["causes"][0]["reason"], "FieldValueRequired");
}
