//! Retention runs: a Repository object runs its policy (or its organization's) each time it
//! reconciles and reports the run in `status.retention`; repositories of the management API
//! (and those created by a push) run theirs with each collection. The policy logic is
//! `aerugo_db::retention`.

use aerugo_crds::{RetentionMode, RetentionStatus};
use aerugo_db::retention::{self, Mode, Report};
use time::OffsetDateTime;

use crate::context::Context;
use crate::error::Result;

/// How recently the Pod watcher must have written the digests in use for a run to delete.
pub const IN_USE_FRESH: time::Duration = time::Duration::minutes(5);

/// Whether what running Pods use is known: always when Pods are not watched (nothing can be
/// known, and the operator says so at start), else when the watcher wrote it recently.
pub async fn in_use_known(client: &impl aerugo_db::GenericClient, pods_watched: bool) -> Result<bool> {
    if !pods_watched {
        return Ok(true);
    }
    let (synced, _) = aerugo_db::gc::in_use_state(client).await?;
    Ok(synced.is_some_and(|at| at > OffsetDateTime::now_utc() - IN_USE_FRESH))
}

/// Runs the policy in force for repository `name`; `None` when it has none.
pub async fn run(ctx: &Context, name: &str) -> Result<Option<Report>> {
    let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let Some(subject) = retention::subject(&client, name).await? else { return Ok(None) };
    drop(client);
    run_subject(ctx, &subject).await
}

/// Runs `subject`'s policy; `None` when it has none.
async fn run_subject(ctx: &Context, subject: &retention::Subject) -> Result<Option<Report>> {
    if subject.policy.is_none() {
        return Ok(None);
    }
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let known = in_use_known(&client, ctx.settings.pods_watched).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let report = retention::run(&tx, subject, OffsetDateTime::now_utc(), known).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    if report.mode == Mode::Enforce && !known {
        tracing::warn!(repository = %subject.name, "retention deleted nothing: the digests running Pods use are not known yet");
    }
    Ok(Some(report))
}

/// Runs the policies of the repositories no Repository object declares; returns how many ran.
pub async fn run_undeclared(ctx: &Context) -> Result<usize> {
    let mut after = 0;
    let mut ran = 0;
    loop {
        let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
        let page = retention::undeclared_subjects(&client, after, 100).await?;
        drop(client);
        let Some(last) = page.last() else { return Ok(ran) };
        after = last.id;
        for subject in &page {
            if let Some(report) = run_subject(ctx, subject).await? {
                ran += 1;
                if report.tags > 0 {
                    tracing::info!(repository = %subject.name, mode = ?report.mode, tags = report.tags, deleted = report.deleted, bytes = report.bytes, "retention");
                }
            }
        }
    }
}

/// The report as `Repository.status.retention` shows it.
pub fn status_of(report: &Report) -> RetentionStatus {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    RetentionStatus {
        mode: match report.mode {
            Mode::DryRun => RetentionMode::DryRun,
            Mode::Enforce => RetentionMode::Enforce,
        },
        ran_at: report.ran_at.clone(),
        tags: count(report.tags),
        first_tags: report.first_tags.clone(),
        manifests: count(report.manifests),
        bytes: report.bytes,
        protected_in_use: count(report.protected_in_use),
        protected: count(report.protected),
        deleted: count(report.deleted),
    }
}

/// The Event a run is worth, if any: (reason, note). A run that deleted something always is; a
/// plan only when it differs from the last one reported (`before`), so that a resync does not
/// repeat it.
pub fn notice(before: Option<&RetentionStatus>, after: &RetentionStatus) -> Option<(&'static str, String)> {
    let human = |s: &RetentionStatus| {
        let tags = if s.first_tags.is_empty() {
            String::new()
        } else {
            format!(" ({}{})", s.first_tags.join(", "), if s.tags > s.first_tags.len() as i64 { ", …" } else { "" })
        };
        format!(
            "{} tags{tags}, then {} manifests and {} bytes; {} tags kept for running Pods",
            s.tags, s.manifests, s.bytes, s.protected_in_use
        )
    };
    if after.deleted > 0 {
        return Some(("RetentionEnforced", format!("deleted {}", human(after))));
    }
    let same = |b: &RetentionStatus| {
        (b.mode, b.tags, &b.first_tags, b.manifests, b.bytes)
            == (after.mode, after.tags, &after.first_tags, after.manifests, after.bytes)
    };
    if after.tags == 0 && after.manifests == 0 || before.is_some_and(same) {
        return None;
    }
    match after.mode {
        RetentionMode::DryRun => Some(("RetentionDryRun", format!("would delete {}", human(after)))),
        // Enforce selected nothing to delete now but untagged manifests wait for collection.
        RetentionMode::Enforce => Some(("RetentionPending", format!("collecting {}", human(after)))),
    }
}
