//! `aerugo-dataplane`: `serve` runs the registry, `migrate` applies the database schema,
//! `bootstrap` creates the first site administrator, `keygen` makes a token signing key and
//! `token attenuate` narrows a token offline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{HttpServer, web};
use aerugo_auth::token::{self, Restriction, TokenKeys};
use aerugo_dataplane::auth::Auth;
use aerugo_dataplane::cache::Cache;
use aerugo_dataplane::config::{AuthArgs, ServeArgs, StorageKind};
use aerugo_dataplane::events::Deliverer;
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
    /// Create (or reset the password of) a site administrator and, optionally, an
    /// organization it owns that creates repositories on push. Idempotent.
    Bootstrap {
        /// Postgres URL.
        #[arg(long, env = "AERUGO_DATABASE_URL")]
        database_url: String,
        /// The administrator's username.
        #[arg(long, env = "AERUGO_ADMIN_USERNAME", default_value = "admin")]
        admin_username: String,
        /// File holding the administrator's password (secrets are never flag values).
        #[arg(long, env = "AERUGO_ADMIN_PASSWORD_FILE")]
        admin_password_file: PathBuf,
        /// An organization to create with the administrator as Owner (e.g. `library`).
        #[arg(long, env = "AERUGO_BOOTSTRAP_ORG")]
        org: Option<String>,
    },
    /// Print a new Ed25519 token signing key (hex) for `--token-key-file`.
    Keygen {
        /// Write the key to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Token tools that need no registry.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check that every tag → manifest → blob chain resolves and that every recorded object is
    /// in storage with its blob's size; with --repair, fix what can be fixed without losing
    /// anything a manifest needs. Takes the serve settings (database, storage). Exits 1 while
    /// problems remain.
    Fsck(Box<FsckArgs>),
}

#[derive(Debug, clap::Args)]
struct FsckArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Repair what can be repaired.
    #[arg(long)]
    repair: bool,
    /// Do not look recorded objects up in storage (database checks only).
    #[arg(long)]
    skip_storage: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Read a token on standard input and print a narrower one: only one repository, only
    /// some actions, an earlier expiry. No key is needed; the registry enforces both the
    /// original grant and the new limits.
    Attenuate {
        /// Only this repository.
        #[arg(long)]
        repository: Option<String>,
        /// Only these actions (comma-separated: pull, push, delete).
        #[arg(long)]
        actions: Option<String>,
        /// Expire this many seconds from now (if sooner than the token's own expiry).
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AERUGO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a container's log is a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    match Cli::parse().command {
        Command::Serve(args) => actix_web::rt::System::new().block_on(serve(*args)),
        Command::Fsck(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if !runtime.block_on(fsck(*args))? {
                std::process::exit(1);
            }
            Ok(())
        }
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
        Command::Bootstrap { database_url, admin_username, admin_password_file, org } => {
            let password = std::fs::read_to_string(&admin_password_file)
                .with_context(|| format!("reading {}", admin_password_file.display()))?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(bootstrap(&database_url, &admin_username, password.trim(), org.as_deref()))
        }
        Command::Keygen { out } => {
            let key = TokenKeys::generate().private_hex();
            match out {
                Some(path) => write_secret(&path, &key),
                None => Ok(writeln!(std::io::stdout(), "{key}")?),
            }
        }
        Command::Token(TokenCommand::Attenuate { repository, actions, expires_in }) => {
            let mut presented = String::new();
            std::io::stdin().read_to_string(&mut presented)?;
            let restriction = Restriction {
                repository: repository.map(|r| r.parse()).transpose().context("--repository")?,
                actions: actions
                    .map(|a| a.split(',').map(|x| x.trim().parse::<aerugo_auth::Action>()).collect())
                    .transpose()
                    .context("--actions")?,
                expires_at: expires_in.map(|s| SystemTime::now() + Duration::from_secs(s)),
            };
            let narrowed = token::attenuate(presented.trim(), &restriction)?;
            Ok(writeln!(std::io::stdout(), "{narrowed}")?)
        }
    }
}

/// Writes `contents` to a new file readable only by its owner.
fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{contents}")?;
    Ok(())
}

async fn bootstrap(database_url: &str, username: &str, password: &str, org: Option<&str>) -> anyhow::Result<()> {
    use aerugo_db::tenancy;
    anyhow::ensure!(password.chars().count() >= 8, "the administrator password needs at least 8 characters");
    let hash = aerugo_auth::password::hash(password)?;
    let pool = aerugo_db::pool(database_url, 1)?;
    let mut client = pool.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await?;
    let admin = tenancy::upsert_site_admin(&tx, username, &hash).await?;
    if let Some(name) = org {
        let new = tenancy::NewOrganization {
            name,
            display_name: None,
            auto_create_repos: true,
            default_visibility: "private",
        };
        if tenancy::create_organization(&tx, &new, admin.id).await?.is_none() {
            let existing = tenancy::organization(&tx, name).await?.context("organization vanished")?;
            tenancy::put_member(&tx, existing.id, admin.id, "owner").await?;
        }
    }
    tx.commit().await?;
    tracing::info!(username, org, "site administrator ready");
    Ok(())
}

/// The token keys: from the key files, or a random key for a single node.
fn token_keys(args: &AuthArgs) -> anyhow::Result<TokenKeys> {
    let read = |path: &PathBuf| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    match &args.token_key_file {
        Some(path) => {
            let current = read(path)?;
            let previous = args.token_previous_key_files.iter().map(read).collect::<anyhow::Result<Vec<_>>>()?;
            let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
            Ok(TokenKeys::from_hex(&current, &previous)?)
        }
        None => {
            tracing::warn!(
                "no --token-key-file: signing tokens with a random key; tokens work only on this node until restart"
            );
            Ok(TokenKeys::generate())
        }
    }
}

async fn open_store(args: &ServeArgs) -> anyhow::Result<AnyStore> {
    Ok(match args.storage {
        StorageKind::File => AnyStore::Fs(
            FsStore::new(&args.storage_path)
                .await
                .with_context(|| format!("opening storage directory {}", args.storage_path.display()))?,
        ),
        StorageKind::S3 => AnyStore::S3(S3Store::new(
            &args.s3_config(aerugo_storage::secret_access_key(args.s3_secret_access_key_file.as_deref())?)?,
        )),
    })
}

async fn fsck(args: FsckArgs) -> anyhow::Result<bool> {
    let store = open_store(&args.serve).await?;
    let pool = aerugo_db::pool(&args.serve.database_url, 2)?;
    let report = aerugo_dataplane::fsck::fsck(&pool, &store, !args.skip_storage, args.repair).await?;
    let mut out = std::io::stdout().lock();
    for problem in &report.problems {
        writeln!(out, "{problem}")?;
    }
    writeln!(
        out,
        "checked {} objects: {} problems, {} repairs",
        report.objects_checked,
        report.problems.len(),
        report.repaired
    )?;
    // After repairs, only a second scan tells what is left.
    let clean = if args.repair && report.repaired > 0 {
        let after = aerugo_dataplane::fsck::fsck(&pool, &store, !args.skip_storage, false).await?;
        for problem in &after.problems {
            writeln!(out, "remaining: {problem}")?;
        }
        after.problems.is_empty()
    } else {
        report.problems.is_empty()
    };
    Ok(clean)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let event_settings = args.event_settings()?;
    let store = open_store(&args).await?;
    let pool = aerugo_db::pool(&args.database_url, args.database_pool_size)?;
    let auth = web::Data::new(Auth::new(pool.clone(), token_keys(&args.auth)?, args.auth.settings()?));
    let metrics = web::Data::new(Metrics::new()?);
    let cache_settings = args.cache_settings()?;
    let cache = Arc::new(Cache::new(&cache_settings, metrics.cache.clone())?);
    if cache.is_shared() && !cache.wait_serving(Duration::from_secs(5)).await {
        tracing::warn!("Redis not reachable yet: serving from Postgres until it is");
    }
    let deliverer = match event_settings {
        Some(events) => Some(Deliverer::new(pool.clone(), events, metrics.events.clone())?),
        None => None,
    };
    let mirrors = Arc::new(aerugo_dataplane::mirror::Mirrors::new(settings.mirror_timeout, metrics.mirrors.clone()));
    if let Err(e) = mirrors.refresh(&pool).await {
        tracing::warn!(error = %e, "reading the mirrors failed; retrying in the background");
    }
    actix_web::rt::spawn(mirrors.clone().run(pool.clone()));
    let registry = web::Data::new(
        Registry::new(pool, store, settings.clone())
            .with_cache(cache.clone())
            .with_upload_histogram(metrics.upload_duration.clone())
            .with_mirrors(mirrors),
    );
    actix_web::rt::spawn(aerugo_dataplane::cache::listen::run(
        args.database_url.clone(),
        cache,
        auth.clone().into_inner(),
    ));
    if let Err(e) = registry.ready().await {
        tracing::warn!(error = %e, "database or storage not reachable yet; serving anyway, /readyz reports it");
    }

    if let Some(deliverer) = &deliverer {
        tracing::info!(lease_owner = deliverer.owner(), "delivering events");
        actix_web::rt::spawn(deliverer.clone().run());
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

    let background = auth.clone().into_inner();
    let pulls = registry.clone().into_inner();
    let refresh_every = auth.settings().revocation_refresh;
    actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(refresh_every);
        let mut flushed = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            if let Err(e) = background.refresh_revocations().await {
                tracing::warn!(error = %e, "reloading revoked credentials failed");
            }
            if flushed.elapsed() >= Duration::from_secs(30) {
                flushed = tokio::time::Instant::now();
                if let Err(e) = background.flush_last_used().await {
                    tracing::warn!(error = %e, "recording API key use failed");
                }
                if let Err(e) = pulls.flush_pulls().await {
                    tracing::warn!(error = %e, "recording manifest pulls failed");
                }
            }
        }
    });

    let pulls_at_exit = registry.clone();
    let (app_registry, app_auth, app_metrics) = (registry.clone(), auth.clone(), metrics.clone());
    let mut server = HttpServer::new(move || server::app(app_registry.clone(), app_auth.clone(), app_metrics.clone()))
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
        cache = cache_settings.mode.name(), "aerugo data plane serving"
    );
    futures_util::future::try_join(server.run(), admin.run()).await?;
    if let Err(e) = auth.flush_last_used().await {
        tracing::warn!(error = %e, "recording API key use at shutdown failed");
    }
    if let Err(e) = pulls_at_exit.flush_pulls().await {
        tracing::warn!(error = %e, "recording manifest pulls at shutdown failed");
    }
    if let Some(deliverer) = deliverer {
        deliverer.release().await;
    }
    Ok(())
}
