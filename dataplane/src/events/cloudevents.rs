//! What a delivery sends, with no IO: events as CloudEvents 1.0 (structured JSON, or a JSON
//! batch), the `Aerugo-Signature` header, and which events a subscription selects.

use aerugo_db::events::{Event, Subscription};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// `Content-Type` of one structured CloudEvent.
pub const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
/// `Content-Type` of a batch.
pub const BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "aerugo-signature";

/// Which events of its organization a subscription delivers.
#[derive(Debug, Clone)]
pub struct Selection {
    types: Vec<String>,
    repositories: Option<GlobSet>,
    org_prefix: String,
    start_at: time::OffsetDateTime,
}

impl Selection {
    /// The selection of `sub`. Invalid globs were refused when the subscription was written; one
    /// that still fails to compile selects nothing rather than everything.
    pub fn of(sub: &Subscription) -> Self {
        let repositories = if sub.repositories.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for pattern in &sub.repositories {
                if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
                    set.add(glob);
                }
            }
            Some(set.build().unwrap_or_else(|_| GlobSet::empty()))
        };
        Selection {
            types: sub.types.clone(),
            repositories,
            org_prefix: format!("{}/", sub.org),
            start_at: sub.start_at,
        }
    }

    /// Whether events of `stream` may be selected at all (the organization's own stream always
    /// may: its events concern no repository).
    pub fn wants_stream(&self, stream: &str) -> bool {
        match (&self.repositories, stream.strip_prefix(&self.org_prefix)) {
            (None, _) => true,
            (Some(_), None) => stream.is_empty(),
            (Some(globs), Some(path)) => globs.is_match(path),
        }
    }

    /// Whether `event` is delivered.
    pub fn wants(&self, event: &Event) -> bool {
        event.at >= self.start_at && self.types.contains(&event.kind) && self.wants_stream(&event.stream)
    }
}

/// `event` of organization `org` as a structured CloudEvent. `partitionkey` (the Partitioning
/// extension) names its stream and `sequence` (the Sequence extension, zero-padded so that it
/// orders as a string) its place there: 1, 2, 3… in commit order over every event type, so a
/// subscription to some types sees the others' numbers skipped.
pub fn cloudevent(org: &str, event: &Event) -> Value {
    let subject = if event.stream.is_empty() {
        event.data.get("keyId").and_then(Value::as_str).unwrap_or_default().to_owned()
    } else {
        event.stream.clone()
    };
    let partition = if event.stream.is_empty() { org.to_owned() } else { event.stream.clone() };
    json!({
        "specversion": "1.0",
        "id": event.id.to_string(),
        "source": format!("/orgs/{org}"),
        "type": event.kind,
        "subject": subject,
        "time": event.at.format(&Rfc3339).unwrap_or_default(),
        "datacontenttype": "application/json",
        "partitionkey": partition,
        "sequence": format!("{:020}", event.seq),
        "data": event.data,
    })
}

/// The request body and its `Content-Type`: one structured event when the subscription's batch
/// size is 1, else a batch (even of one event, so a receiver sees one format).
pub fn body(org: &str, events: &[&Event], batch_size: i32) -> (Vec<u8>, &'static str) {
    if batch_size == 1 && events.len() == 1 {
        (serde_json::to_vec(&cloudevent(org, events[0])).unwrap_or_default(), STRUCTURED)
    } else {
        let batch: Vec<Value> = events.iter().map(|e| cloudevent(org, e)).collect();
        (serde_json::to_vec(&batch).unwrap_or_default(), BATCH)
    }
}

/// The `Aerugo-Signature` value: `t=<unix seconds>,sha256=<hex HMAC-SHA256 of "<t>.<body>">`.
/// The time lets a receiver refuse an old request replayed to it.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC takes keys of any length.
        unreachable!("HMAC key of any length")
    });
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_seconds},sha256={}", hex_lower(&mac.finalize().into_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).expect("time")
    }

    fn sub(repositories: &[&str]) -> Subscription {
        Subscription {
            id: 1,
            org_id: 1,
            org: "acme".into(),
            name: "ci".into(),
            managed_by: "api".into(),
            endpoint: "http://127.0.0.1:1/".into(),
            types: vec!["io.aerugo.manifest.pushed".into(), "io.aerugo.key.created".into()],
            repositories: repositories.iter().map(|s| s.to_string()).collect(),
            batch_size: 1,
            signing_secret: None,
            start_at: at(1_767_225_600), // 2026-01-01T00:00:00Z
            replayed_from: None,
            epoch: 0,
            delivered: 0,
            last_delivered_at: None,
            last_delivered_id: None,
            failures: 0,
            failing_since: None,
            last_error: None,
            next_attempt_at: None,
        }
    }

    fn event(stream: &str, kind: &str, seq: i64) -> Event {
        Event {
            id: 40 + seq,
            stream: stream.into(),
            seq,
            kind: kind.into(),
            at: at(1_769_947_200), // 2026-02-01T12:00:00Z
            data: json!({ "repository": stream, "keyId": "k1" }),
        }
    }

    #[test]
    fn selection_by_type_repository_and_start() {
        let all = Selection::of(&sub(&[]));
        assert!(all.wants(&event("acme/app", "io.aerugo.manifest.pushed", 1)));
        assert!(!all.wants(&event("acme/app", "io.aerugo.tag.moved", 2)), "type not subscribed");
        let team = Selection::of(&sub(&["team/*"]));
        assert!(team.wants_stream("acme/team/app"));
        assert!(!team.wants_stream("acme/team/app/sub"), "* stays within one path component");
        assert!(!team.wants_stream("acme/other"));
        assert!(!team.wants_stream("acmeteam/app"), "another organization's prefix");
        assert!(team.wants_stream(""), "organization events concern no repository");
        let mut early = event("acme/team/app", "io.aerugo.manifest.pushed", 3);
        early.at = at(1_767_225_540); // 2025-12-31T23:59:00Z
        assert!(!team.wants(&early), "before the subscription's start");
    }

    #[test]
    fn cloudevents_carry_partition_and_sequence() {
        let e = event("acme/app", "io.aerugo.manifest.pushed", 7);
        let ce = cloudevent("acme", &e);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "47");
        assert_eq!(ce["subject"], "acme/app");
        assert_eq!(ce["partitionkey"], "acme/app");
        assert_eq!(ce["sequence"], "00000000000000000007");
        assert_eq!(ce["time"], "2026-02-01T12:00:00Z");
        let key = cloudevent("acme", &event("", "io.aerugo.key.created", 2));
        assert_eq!((key["subject"].as_str(), key["partitionkey"].as_str()), (Some("k1"), Some("acme")));

        let (one, kind) = body("acme", &[&e], 1);
        assert_eq!(kind, STRUCTURED);
        assert_eq!(serde_json::from_slice::<Value>(&one).expect("json")["id"], "47");
        let (many, kind) = body("acme", &[&e], 10);
        assert_eq!(kind, BATCH);
        assert_eq!(serde_json::from_slice::<Value>(&many).expect("json")[0]["id"], "47");
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_and_body() {
        // Known answer, computed independently (Python's hmac) over "0.what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", 0, b"what do ya want for nothing?"),
            "t=0,sha256=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert_ne!(signature(b"Jefe", 1, b"x"), signature(b"Jefe", 2, b"x"), "the time is signed");
        assert_ne!(signature(b"Jefe", 1, b"x"), signature(b"other", 1, b"x"));
    }
}
