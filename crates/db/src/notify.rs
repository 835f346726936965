//! Change notifications: triggers on the tenancy tables (migration V6) call `pg_notify` on
//! [`CHANNEL`] with the table's name, whoever writes (the operator, the management API, SQL by
//! hand), and tools that change what repositories serve announce it with [`repository`]. Every
//! data-plane node listens and retires its cached entries.

use tokio::sync::mpsc;

use crate::{GenericClient, Result};

/// The notification channel.
pub const CHANNEL: &str = "aerugo_invalidate";

/// The payload prefix of a change to one repository's content (`repository:<name>`).
pub const REPOSITORY_PREFIX: &str = "repository:";

/// Announces (at commit, when inside a transaction) that `repository` serves something else.
pub async fn repository(client: &impl GenericClient, repository: &str) -> Result<()> {
    let payload = format!("{REPOSITORY_PREFIX}{repository}");
    client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await?;
    Ok(())
}

/// Announces (at commit, when inside a transaction) a change that may concern any repository;
/// `what` names it (a table, a tool).
pub async fn everything(client: &impl GenericClient, what: &str) -> Result<()> {
    client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what]).await?;
    Ok(())
}

/// A connection listening on [`CHANNEL`]; payloads arrive on the receiver, which closes when
/// the connection ends (the caller reconnects).
pub struct Listener {
    /// Keeps the session (and so the `LISTEN`) alive.
    _client: tokio_postgres::Client,
    /// Notification payloads.
    pub payloads: mpsc::UnboundedReceiver<String>,
}

/// Opens a dedicated connection to `url` and listens on [`CHANNEL`].
pub async fn listen(url: &str) -> Result<Listener> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (tx, payloads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "change notification connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listener { _client: client, payloads })
}
