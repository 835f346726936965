//! `aerugo-dataplane`: `serve` runs the registry, `migrate` applies the database schema.

use std::time::Duration;

use actix_web::{HttpServer, web};
use aerugo_dataplane::config::{ServeArgs, StorageKind};
use aerugo_dataplane::metrics::Metrics;
use aerugo_dataplane::{Registry, server};
use aerugo_storage::{AnyStore, FsStore, S3Store};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Aerugo's OCI registry data plane.
#[derive(Debug, Parser)]
#[command(name = "aerugo-dataplane", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the OCI Distribution API.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations (a no-op when the schema is current), then exit.
    Migrate {
        /// Postgres URL.
        #[arg(long, env = "AERUGO_DATABASE_URL")]
        database_url: String,
    },
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AERUGO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    match Cli::parse().command {
        Command::Serve(args) => actix_web::rt::System::new().block_on(serve(*args)),
        Command::Migrate { database_url } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let applied = runtime.block_on(aerugo_db::migrate(&database_url))?;
            if applied.is_empty() {
                tracing::info!("schema is current; nothing to apply");
            }
            for migration in applied {
                tracing::info!(%migration, "applied");
            }
            Ok(())
        }
    }
}

/// The S3 secret: from the file named by a flag, else the environment. Never a flag value.
fn s3_secret(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.s3_secret_access_key_file {
        let secret = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Some(secret.trim().to_owned()));
    }
    Ok(std::env::var("AERUGO_S3_SECRET_ACCESS_KEY").ok())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let store = match args.storage {
        StorageKind::File => AnyStore::Fs(
            FsStore::new(&args.storage_path)
                .await
                .with_context(|| format!("opening storage directory {}", args.storage_path.display()))?,
        ),
        StorageKind::S3 => AnyStore::S3(S3Store::new(&args.s3_config(s3_secret(&args)?)?)),
    };
    let pool = aerugo_db::pool(&args.database_url, args.database_pool_size)?;
    let registry = web::Data::new(Registry::new(pool, store, settings.clone()));
    if let Err(e) = registry.ready().await {
        tracing::warn!(error = %e, "database or storage not reachable yet; serving anyway, /readyz reports it");
    }

    let sweeper = registry.clone().into_inner();
    let sweep_every = (settings.upload_ttl / 4).clamp(Duration::from_secs(15), Duration::from_secs(600));
    actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(sweep_every);
        loop {
            ticker.tick().await;
            match sweeper.expire_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired upload sessions removed"),
                Err(e) => tracing::warn!(error = %e, "expiring upload sessions failed"),
            }
        }
    });

    let metrics = web::Data::new(Metrics::new()?);
    let (app_registry, app_metrics) = (registry.clone(), metrics.clone());
    let mut server = HttpServer::new(move || server::app(app_registry.clone(), app_metrics.clone()))
        .bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    let admin = HttpServer::new(move || server::admin_app(registry.clone(), metrics.clone()))
        .workers(1)
        .bind(args.admin_listen)
        .with_context(|| format!("binding the admin port {}", args.admin_listen))?;
    tracing::info!(
        listen = %args.listen, admin = %args.admin_listen, storage = ?args.storage, redirect = ?args.redirect,
        "aerugo data plane serving"
    );
    futures_util::future::try_join(server.run(), admin.run()).await?;
    Ok(())
}
