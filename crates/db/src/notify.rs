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

/// What changed, as a notification says it.
pub enum Change<'a> {
    /// What one repository serves (tags, manifests, blob links).
    Repository(&'a str),
    /// Anything that may concern any repository; the name says what (a table, a tool).
    Everything(&'a str),
}

/// Announces `change` to every listening node (at commit, when inside a transaction).
pub async fn announce(client: &impl GenericClient, change: Change<'_>) -> Result<()> {
    let payload = match change {
        Change::Repository(name) => format!("{REPOSITORY_PREFIX}{name}"),
        Change::Everything(what) => what.to_owned(),
    };
    client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await?;
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
    let (client, mut connection) = crate::tls::connect(url).await?;
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
