//! Retention: which tags a repository's policy deletes, what a run would give back, and the run
//! itself. The policy is stored as JSON (`repositories.retention`, else the organization's
//! default `organizations.retention`), in the Repository CRD's spelling.
//!
//! A run deletes tags only; the manifests they leave untagged are then collected by the
//! manifest collector after the review delay, with the blobs only they used (see [`crate::gc`]).
//! The plan reports all of it, so a `DryRun` report is what `Enforce` then deletes.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{GenericClient, Result};

/// How many tag names a report lists.
pub const REPORTED_TAGS: usize = 20;

/// Whether a policy deletes or only reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Report what would go; delete nothing (the default, so that a policy is seen before it
    /// acts).
    #[default]
    DryRun,
    /// Delete.
    Enforce,
}

/// A retention policy, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Deletes, or only reports.
    #[serde(default)]
    pub mode: Mode,
    /// Keep the newest N tags (by push time) among those the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep tags pushed within this duration (`30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Keep tags whose manifest was pulled within this duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pulled_within: Option<String>,
    /// The tags the keep rules apply to (glob); other tags are kept. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_pattern: Option<String>,
    /// Tags (globs) never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// Collect manifests no tag, index or subject keeps. Default true.
    #[serde(default = "yes")]
    pub delete_untagged: bool,
}

fn yes() -> bool {
    true
}

impl Policy {
    /// Reads a stored policy; `None` for none or an unreadable one (reported by [`Policy::check`]
    /// where it is written).
    pub fn from_stored(value: Option<&Value>) -> Option<Policy> {
        value.filter(|v| !v.is_null()).and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Whether the collector deletes untagged manifests under `policy` (`None`: no policy, so
    /// yes: that is how storage is given back by default).
    pub fn collects_untagged(policy: Option<&Policy>) -> bool {
        policy.is_none_or(|p| p.mode == Mode::Enforce && p.delete_untagged)
    }

    /// Whether any rule selects tags (without one, a policy only governs untagged manifests).
    pub fn selects_tags(&self) -> bool {
        self.keep_last.is_some() || self.keep_within.is_some() || self.keep_pulled_within.is_some()
    }

    /// Checks the durations and patterns.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (field, value) in [("keepWithin", &self.keep_within), ("keepPulledWithin", &self.keep_pulled_within)] {
            if let Some(value) = value
                && parse_duration(value).is_none()
            {
                return Err(format!("{field}: {value:?} is not a duration: a number and s, m, h, d or w (\"30d\")"));
            }
        }
        for pattern in self.tag_pattern.iter().chain(&self.protect) {
            globset::Glob::new(pattern).map_err(|e| format!("tag pattern {pattern:?}: {e}"))?;
        }
        Ok(())
    }
}

/// `30d`, `72h`, `15m`, `90s`, `2w`.
pub fn parse_duration(text: &str) -> Option<time::Duration> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    number.checked_mul(seconds).map(time::Duration::seconds)
}

fn matcher(patterns: &[String]) -> globset::GlobSet {
    let mut set = globset::GlobSetBuilder::new();
    for pattern in patterns {
        if let Ok(glob) = globset::Glob::new(pattern) {
            set.add(glob);
        }
    }
    set.build().unwrap_or_else(|_| globset::GlobSet::empty())
}

/// A tag as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    /// The tag.
    pub name: String,
    /// The manifest it points to.
    pub manifest_id: i64,
    /// When it was pushed (last moved).
    pub pushed_at: OffsetDateTime,
    /// When its manifest was last pulled.
    pub pulled_at: Option<OffsetDateTime>,
    /// A Pod uses its manifest.
    pub in_use: bool,
}

/// Which tags a policy deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The tags to delete, newest first.
    pub delete: Vec<TagFacts>,
    /// Tags kept only because a `protect` or immutable pattern matches them.
    pub protected: usize,
    /// Tags kept only because a Pod uses their manifest.
    pub in_use: usize,
}

/// The tags `policy` deletes. The keep rules apply to the tags matching `tagPattern` that are
/// not protected (a `protect` pattern, an `immutable` pattern of the repository, or a Pod using
/// the manifest): such a tag goes unless one of the rules keeps it — it is among the newest
/// `keepLast` of them, it was pushed within `keepWithin`, or its manifest was pulled within
/// `keepPulledWithin`. A policy with no keep rule deletes no tag. Protected tags are kept and do
/// not count towards `keepLast`.
pub fn select(policy: &Policy, immutable: &[String], tags: &[TagFacts], now: OffsetDateTime) -> Selection {
    let mut selection = Selection::default();
    if !policy.selects_tags() {
        return selection;
    }
    let applies = policy.tag_pattern.as_ref().map(|p| matcher(std::slice::from_ref(p)));
    let protected = matcher(&policy.protect.iter().chain(immutable).cloned().collect::<Vec<_>>());
    let within = policy.keep_within.as_deref().and_then(parse_duration);
    let pulled_within = policy.keep_pulled_within.as_deref().and_then(parse_duration);
    let mut candidates: Vec<&TagFacts> = Vec::new();
    for tag in tags {
        if applies.as_ref().is_some_and(|m| !m.is_match(&tag.name)) {
            continue;
        }
        if protected.is_match(&tag.name) {
            selection.protected += 1;
        } else if tag.in_use {
            selection.in_use += 1;
        } else {
            candidates.push(tag);
        }
    }
    candidates.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.name.cmp(&b.name)));
    let keep_last = policy.keep_last.map_or(0, |n| n as usize);
    for (rank, tag) in candidates.into_iter().enumerate() {
        let kept = (policy.keep_last.is_some() && rank < keep_last)
            || within.is_some_and(|d| tag.pushed_at > now - d)
            || pulled_within.is_some_and(|d| tag.pulled_at.is_some_and(|p| p > now - d));
        if !kept {
            selection.delete.push(tag.clone());
        }
    }
    selection
}

/// What a run deletes (or, in `DryRun`, would): reported in `Repository.status.retention`, in
/// the repository's `retention_report`, and by the management API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The policy's mode.
    pub mode: Mode,
    /// When a run first had this outcome (RFC 3339); later runs with the same outcome keep it.
    pub ran_at: String,
    /// Tags the policy selects.
    pub tags: usize,
    /// The first of them, newest first.
    pub first_tags: Vec<String>,
    /// Manifests that go once those tags are gone (untagged, no index or live subject keeps
    /// them, no Pod uses them), including untagged ones already waiting for collection.
    pub manifests: usize,
    /// Bytes of blobs the repository stops holding once those manifests are collected.
    pub bytes: i64,
    /// Tags kept only because a Pod uses their manifest.
    pub protected_in_use: usize,
    /// Tags kept only because a `protect` or immutable pattern matches them.
    pub protected: usize,
    /// Tags this run deleted (0 in `DryRun`).
    pub deleted: usize,
}

/// A repository's retention inputs.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Row id.
    pub id: i64,
    /// Full name.
    pub name: String,
    /// Its organization.
    pub org_id: i64,
    /// Its immutable tag patterns.
    pub immutable: Vec<String>,
    /// The policy in force: its own, else its organization's default.
    pub policy: Option<Policy>,
}

/// Repositories no Repository object declares that have a policy in force (their own or their
/// organization's), after id `after`, at most `limit`.
pub async fn undeclared_subjects(client: &impl GenericClient, after: i64, limit: i64) -> Result<Vec<Subject>> {
    Ok(client
        .query(
            "SELECT r.id, r.name, r.org_id, r.immutable_tag_patterns, COALESCE(r.retention, o.retention)
               FROM repositories r JOIN organizations o ON o.id = r.org_id
              WHERE r.id > $1 AND r.deleted_at IS NULL AND r.managed_by <> 'kubernetes'
                AND COALESCE(r.retention, o.retention) IS NOT NULL
              ORDER BY r.id LIMIT $2",
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(subject_of)
        .collect())
}

/// The repository `name` with its policy in force.
pub async fn subject(client: &impl GenericClient, name: &str) -> Result<Option<Subject>> {
    Ok(client
        .query_opt(
            "SELECT r.id, r.name, r.org_id, r.immutable_tag_patterns, COALESCE(r.retention, o.retention)
               FROM repositories r JOIN organizations o ON o.id = r.org_id
              WHERE r.name = $1 AND r.deleted_at IS NULL",
            &[&name],
        )
        .await?
        .as_ref()
        .map(subject_of))
}

fn subject_of(row: &tokio_postgres::Row) -> Subject {
    let policy: Option<Value> = row.get(4);
    Subject {
        id: row.get(0),
        name: row.get(1),
        org_id: row.get(2),
        immutable: row.get(3),
        policy: Policy::from_stored(policy.as_ref()),
    }
}

/// The repository's tags with what retention needs to know of them.
pub async fn tag_facts(client: &impl GenericClient, repository_id: i64) -> Result<Vec<TagFacts>> {
    Ok(client
        .query(
            "SELECT t.name, t.manifest_id, t.updated_at, m.last_pulled_at,
                    EXISTS (SELECT 1 FROM digests_in_use u WHERE u.digest = m.digest)
               FROM tags t JOIN manifests m ON m.id = t.manifest_id
              WHERE t.repository_id = $1 ORDER BY t.name",
            &[&repository_id],
        )
        .await?
        .iter()
        .map(|r| TagFacts {
            name: r.get(0),
            manifest_id: r.get(1),
            pushed_at: r.get(2),
            pulled_at: r.get(3),
            in_use: r.get(4),
        })
        .collect())
}

/// The manifests that go once `deleted` tags are gone, and the bytes of blobs the repository
/// stops holding then. A manifest stays when a remaining tag points to it, a Pod uses it, an
/// index that stays lists it, its subject stays, or (`collects_untagged` false) always.
pub async fn consequences(
    client: &impl GenericClient,
    repository_id: i64,
    deleted: &HashSet<String>,
    collects_untagged: bool,
) -> Result<(usize, i64)> {
    let manifests = client
        .query(
            "SELECT m.id, m.digest, m.subject_digest,
                    EXISTS (SELECT 1 FROM digests_in_use u WHERE u.digest = m.digest)
               FROM manifests m WHERE m.repository_id = $1",
            &[&repository_id],
        )
        .await?;
    let tags = client.query("SELECT name, manifest_id FROM tags WHERE repository_id = $1", &[&repository_id]).await?;
    let references = client
        .query(
            "SELECT r.parent_id, r.child_id FROM manifest_references r JOIN manifests m ON m.id = r.parent_id
              WHERE m.repository_id = $1",
            &[&repository_id],
        )
        .await?;
    let mut kept: HashSet<i64> = HashSet::new();
    let mut roots: Vec<i64> = Vec::new();
    for row in &manifests {
        if !collects_untagged || row.get::<_, bool>(3) {
            roots.push(row.get(0));
        }
    }
    roots.extend(tags.iter().filter(|t| !deleted.contains(t.get::<_, &str>(0))).map(|t| t.get::<_, i64>(1)));
    let by_digest: HashMap<&str, i64> = manifests.iter().map(|m| (m.get::<_, &str>(1), m.get::<_, i64>(0))).collect();
    let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &references {
        edges.entry(r.get(0)).or_default().push(r.get(1));
    }
    for m in &manifests {
        if let Some(subject) = m.get::<_, Option<&str>>(2).and_then(|s| by_digest.get(s)) {
            edges.entry(*subject).or_default().push(m.get(0));
        }
    }
    while let Some(id) = roots.pop() {
        if kept.insert(id) {
            roots.extend(edges.get(&id).into_iter().flatten().copied());
        }
    }
    let gone: Vec<i64> = manifests.iter().map(|m| m.get::<_, i64>(0)).filter(|id| !kept.contains(id)).collect();
    if gone.is_empty() {
        return Ok((0, 0));
    }
    let kept: Vec<i64> = kept.into_iter().collect();
    let bytes: i64 = client
        .query_one(
            "SELECT COALESCE(SUM(b.size), 0)::bigint FROM blobs b
              WHERE b.digest IN (SELECT digest FROM manifest_blobs WHERE manifest_id = ANY($1))
                AND b.digest NOT IN (SELECT digest FROM manifest_blobs WHERE manifest_id = ANY($2))",
            &[&gone, &kept],
        )
        .await?
        .get(0);
    Ok((gone.len(), bytes))
}

/// Plans a run of `subject`'s policy at `now` (nothing is written).
pub async fn plan(client: &impl GenericClient, subject: &Subject, now: OffsetDateTime) -> Result<(Report, Selection)> {
    let Some(policy) = &subject.policy else {
        return Ok((Report::default(), Selection::default()));
    };
    let tags = tag_facts(client, subject.id).await?;
    let selection = select(policy, &subject.immutable, &tags, now);
    let deleted: HashSet<String> = selection.delete.iter().map(|t| t.name.clone()).collect();
    // What Enforce would collect, whatever the mode: a dry run reports it.
    let (manifests, bytes) = consequences(client, subject.id, &deleted, policy.delete_untagged).await?;
    let report = Report {
        mode: policy.mode,
        ran_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        tags: selection.delete.len(),
        first_tags: selection.delete.iter().take(REPORTED_TAGS).map(|t| t.name.clone()).collect(),
        manifests,
        bytes,
        protected_in_use: selection.in_use,
        protected: selection.protected,
        deleted: 0,
    };
    Ok((report, selection))
}

/// Runs `subject`'s policy: plans it and, in `Enforce` (when `may_delete`: the digests Pods use
/// are known), deletes the selected tags (each only if it still points to the manifest it was
/// selected with) and queues the repository's untagged manifests for collection; records the
/// report on the repository. Call inside a transaction: the repository's change is announced at
/// commit.
pub async fn run(
    client: &impl GenericClient,
    subject: &Subject,
    now: OffsetDateTime,
    may_delete: bool,
) -> Result<Report> {
    let (mut report, selection) = plan(client, subject, now).await?;
    if report.mode == Mode::Enforce && may_delete {
        let (names, ids): (Vec<&str>, Vec<i64>) =
            selection.delete.iter().map(|t| (t.name.as_str(), t.manifest_id)).unzip();
        let deleted = client
            .execute(
                "DELETE FROM tags t USING unnest($2::text[], $3::bigint[]) AS d(name, manifest_id)
                  WHERE t.repository_id = $1 AND t.name = d.name AND t.manifest_id = d.manifest_id",
                &[&subject.id, &names, &ids],
            )
            .await?;
        report.deleted = usize::try_from(deleted).unwrap_or(usize::MAX);
        if Policy::collects_untagged(subject.policy.as_ref()) {
            sweep(client, subject.id).await?;
        }
        if deleted > 0 {
            let names: BTreeSet<&str> = names.into_iter().collect();
            crate::audit::record(
                client,
                &crate::audit::Event {
                    actor: "retention",
                    action: "retention.enforce",
                    target: &subject.name,
                    org_id: Some(subject.org_id),
                    source: None,
                    allowed: true,
                    detail: serde_json::json!({ "tags": names.iter().take(REPORTED_TAGS).collect::<Vec<_>>(), "deleted": deleted }),
                },
            )
            .await?;
            crate::notify::announce(client, crate::notify::Change::Repository(&subject.name)).await?;
        }
    }
    // A run with the outcome of the last one keeps its time, so that an unchanged repository
    // is not rewritten (nor its status) at every reconcile.
    let last: Option<Value> =
        client.query_one("SELECT retention_report FROM repositories WHERE id = $1", &[&subject.id]).await?.get(0);
    let last: Option<Report> = last.and_then(|v| serde_json::from_value(v).ok());
    match last {
        Some(last) if Report { ran_at: last.ran_at.clone(), ..report.clone() } == last => report.ran_at = last.ran_at,
        _ => {
            client
                .execute(
                    "UPDATE repositories SET retention_report = $2 WHERE id = $1",
                    &[&subject.id, &serde_json::to_value(&report).unwrap_or(Value::Null)],
                )
                .await?;
        }
    }
    Ok(report)
}

/// Queues the repository's untagged manifests that are not queued yet (manifests left untagged
/// while the policy kept them, now that it does not).
pub async fn sweep(client: &impl GenericClient, repository_id: i64) -> Result<u64> {
    Ok(client
        .execute(
            "INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
             SELECT m.repository_id, m.id, 'retention' FROM manifests m
              WHERE m.repository_id = $1 AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
             ON CONFLICT (repository_id, manifest_id) DO NOTHING",
            &[&repository_id],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, minutes_ago: i64, now: OffsetDateTime) -> TagFacts {
        TagFacts {
            name: name.into(),
            manifest_id: minutes_ago,
            pushed_at: now - time::Duration::minutes(minutes_ago),
            pulled_at: None,
            in_use: false,
        }
    }

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({})).expect("empty policy")
    }

    fn names(s: &Selection) -> Vec<&str> {
        s.delete.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_unprotected_tags_of_the_pattern() {
        let now = OffsetDateTime::now_utc();
        let tags: Vec<TagFacts> = (1..=6).map(|i| tag(&format!("b{i}"), i, now)).chain([tag("v1", 10, now)]).collect();
        let p = Policy { keep_last: Some(2), protect: vec!["v*".into()], ..policy() };
        let s = select(&p, &[], &tags, now);
        assert_eq!(names(&s), ["b3", "b4", "b5", "b6"]);
        assert_eq!(s.protected, 1);
        // Only the pattern's tags are candidates.
        let p = Policy { keep_last: Some(0), tag_pattern: Some("b[12]".into()), ..policy() };
        assert_eq!(names(&select(&p, &[], &tags, now)), ["b1", "b2"]);
        // Immutable patterns protect like `protect`.
        let p = Policy { keep_last: Some(0), ..policy() };
        let s = select(&p, &["b*".into()], &tags, now);
        assert_eq!((names(&s), s.protected), (vec!["v1"], 6));
    }

    #[test]
    fn any_keep_rule_keeps_a_tag_and_pods_protect_theirs() {
        let now = OffsetDateTime::now_utc();
        let mut tags =
            vec![tag("old", 3000, now), tag("pulled", 3000, now), tag("recent", 5, now), tag("running", 9000, now)];
        tags[1].pulled_at = Some(now - time::Duration::hours(1));
        tags[3].in_use = true;
        let p = Policy {
            keep_last: Some(0),
            keep_within: Some("1d".into()),
            keep_pulled_within: Some("2h".into()),
            ..policy()
        };
        let s = select(&p, &[], &tags, now);
        assert_eq!((names(&s), s.in_use), (vec!["old"], 1));
        // No keep rule: the policy is about untagged manifests only.
        assert!(select(&Policy { delete_untagged: true, ..policy() }, &[], &tags, now).delete.is_empty());
    }

    #[test]
    fn policies_read_as_the_crd_writes_them() {
        let p: Policy = serde_json::from_value(serde_json::json!({
            "mode": "Enforce", "keepLast": 5, "keepWithin": "30d", "keepPulledWithin": "2w",
            "tagPattern": "*", "protect": ["v*"], "deleteUntagged": false
        }))
        .expect("policy");
        assert_eq!((p.mode, p.keep_last, p.delete_untagged), (Mode::Enforce, Some(5), false));
        assert!(p.check().is_ok());
        let defaults = policy();
        assert_eq!((defaults.mode, defaults.delete_untagged), (Mode::DryRun, true));
        assert!(!Policy::collects_untagged(Some(&defaults)), "a dry run deletes nothing");
        assert!(Policy::collects_untagged(None));
        assert!(Policy { keep_within: Some("3x".into()), ..policy() }.check().is_err());
        assert!(Policy { protect: vec!["v[".into()], ..policy() }.check().is_err());
        assert_eq!(parse_duration("90s"), Some(time::Duration::seconds(90)));
        assert_eq!(parse_duration("2w"), Some(time::Duration::days(14)));
        assert_eq!(parse_duration("d"), None);
    }
}
