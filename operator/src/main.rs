//! `aerugo-operator`: `run` (the controllers, in a cluster), `apply -f DIR` (file mode, no
//! cluster), `crd` (print or write the CRD YAML) and `migrate`.

use std::path::PathBuf;
use std::time::Duration;

use aerugo_operator::context::{Metrics, Settings, StorageAccess};
use aerugo_operator::controller::{self, ClusterContext};
use aerugo_operator::defaults::DefaultRegistry;
use aerugo_operator::leader::Leadership;
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aerugo-operator", version, about = "Reconciles aerugo.io objects into the registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Database {
    /// Postgres URL of the registry database.
    #[arg(long, env = "AERUGO_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/aerugo")]
    database_url: String,
}

#[derive(clap::Args, Clone)]
struct Common {
    #[command(flatten)]
    database: Database,
    /// The registry host written into pull Secrets (what clients push to).
    #[arg(long, env = "AERUGO_REGISTRY_HOST", default_value = "127.0.0.1:5000")]
    registry_host: String,
}

/// Blob storage, as the data plane is configured (same variables), for the garbage collector.
#[derive(clap::Args, Clone)]
struct Storage {
    /// `none` (no collection), `file` or `s3`.
    #[arg(long, env = "AERUGO_STORAGE", default_value = "none")]
    storage: String,
    /// Directory of the `file` backend.
    #[arg(long, env = "AERUGO_STORAGE_PATH", default_value = "blobs")]
    storage_path: PathBuf,
    /// S3 endpoint.
    #[arg(long, env = "AERUGO_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "AERUGO_S3_BUCKET", default_value = "aerugo")]
    s3_bucket: String,
    /// S3 region.
    #[arg(long, env = "AERUGO_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// S3 access key id.
    #[arg(long, env = "AERUGO_S3_ACCESS_KEY_ID", default_value = "")]
    s3_access_key_id: String,
    /// File holding the S3 secret access key (or set AERUGO_S3_SECRET_ACCESS_KEY).
    #[arg(long, env = "AERUGO_S3_SECRET_ACCESS_KEY_FILE")]
    s3_secret_access_key_file: Option<PathBuf>,
    /// Path-style S3 addressing.
    #[arg(long, env = "AERUGO_S3_PATH_STYLE", default_value_t = false)]
    s3_path_style: bool,
    /// The principal (ARN) the data plane signs as, for the bucket policies of dedicated
    /// organization buckets.
    #[arg(long, env = "AERUGO_S3_PRINCIPAL")]
    s3_principal: Option<String>,
}

impl Storage {
    fn secret(&self) -> Result<String> {
        aerugo_storage::secret_access_key(self.s3_secret_access_key_file.as_deref())?.with_context(
            || "AERUGO_S3_SECRET_ACCESS_KEY_FILE (or AERUGO_S3_SECRET_ACCESS_KEY) is required with s3 storage",
        )
    }

    /// How reconciles reach the storage (for dedicated organization buckets).
    fn access(&self) -> Result<Option<StorageAccess>> {
        Ok(match self.storage.as_str() {
            "none" => None,
            "file" => Some(StorageAccess::File),
            "s3" => Some(StorageAccess::S3 {
                endpoint: self.s3_endpoint.clone().context("AERUGO_S3_ENDPOINT is required with s3 storage")?,
                bucket: self.s3_bucket.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.secret()?,
                principal: self.s3_principal.clone(),
            }),
            other => bail!("unknown storage {other:?}: none, file or s3"),
        })
    }

    async fn store(&self) -> Result<Option<aerugo_storage::AnyStore>> {
        Ok(match self.storage.as_str() {
            "none" => None,
            "file" => Some(aerugo_storage::AnyStore::Fs(
                aerugo_storage::FsStore::new(&self.storage_path)
                    .await
                    .with_context(|| format!("opening {}", self.storage_path.display()))?,
            )),
            "s3" => {
                let secret = self.secret()?;
                Some(aerugo_storage::AnyStore::S3(aerugo_storage::S3Store::new(&aerugo_storage::S3Config {
                    endpoint: self.s3_endpoint.clone(),
                    bucket: self.s3_bucket.clone(),
                    region: self.s3_region.clone(),
                    access_key_id: self.s3_access_key_id.clone(),
                    secret_access_key: secret,
                    path_style: self.s3_path_style,
                })))
            }
            other => bail!("unknown storage {other:?}: none, file or s3"),
        })
    }
}

/// Queue entries reviewed per collector transaction.
const GC_BATCH: i64 = 4000;

/// A duration as the CRDs spell them (`90s`, `15m`, `24h`, `1d`).
fn duration(text: &str) -> std::result::Result<Duration, String> {
    aerugo_db::retention::parse_duration(text)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| format!("{text:?} is not a duration: a number and s, m, h, d or w"))
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig or service account.
    Run {
        #[command(flatten)]
        common: Common,
        /// Admin server: /metrics, /healthz, /readyz.
        #[arg(long, env = "AERUGO_OPERATOR_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
        admin_listen: String,
        /// Seconds between looks at an object that reconciled cleanly (drift, usage).
        #[arg(long, env = "AERUGO_OPERATOR_RESYNC_SECONDS", default_value_t = 300)]
        resync_seconds: u64,
        /// Hold a Lease so that only one replica reconciles.
        #[arg(long, env = "AERUGO_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// Namespace of the Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "HOSTNAME", default_value = "aerugo-operator")]
        identity: String,
        #[command(flatten)]
        storage: Storage,
        /// Seconds between garbage collections (with a storage) and retention runs of
        /// API-managed repositories (Repository objects run theirs when they reconcile).
        #[arg(long, env = "AERUGO_GC_INTERVAL_SECONDS", default_value_t = 600)]
        gc_interval_seconds: u64,
        /// How long what became unreferenced waits before the collector reviews it: pushes in
        /// flight finish first, and a mistaken delete can be undone by pushing again.
        #[arg(long, env = "AERUGO_GC_REVIEW_DELAY", default_value = "1d", value_parser = duration)]
        gc_review_delay: Duration,
        /// Watch Pods in every namespace and never collect a digest one of them runs.
        #[arg(long, env = "AERUGO_PROTECT_IN_USE", default_value_t = true, action = clap::ArgAction::Set)]
        protect_in_use: bool,
        /// A Registry manifest to apply once leading (the Helm chart's default Registry).
        #[arg(long, env = "AERUGO_DEFAULT_REGISTRY_FILE")]
        default_registry_file: Option<PathBuf>,
        /// The ConfigMap (in the operator's namespace) holding that manifest: the Registry's owner.
        #[arg(long, env = "AERUGO_DEFAULT_REGISTRY_CONFIGMAP")]
        default_registry_configmap: Option<String>,
    },
    /// Collect the manifests and blobs nothing references any more whose review delay has
    /// passed (what `run` does periodically), once.
    Gc {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        storage: Storage,
        /// Print what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reconcile the Organization, Repository and ApiKey YAML files of a directory, with no
    /// cluster; ApiKey Secrets are written as manifests under --secrets-dir.
    Apply {
        #[command(flatten)]
        common: Common,
        /// The directory of YAML files (searched recursively).
        #[arg(short = 'f', long = "filename")]
        dir: PathBuf,
        /// Where Secret manifests go: <dir>/<namespace>/<secretName>.yaml.
        #[arg(long, env = "AERUGO_SECRETS_DIR", default_value = "secrets")]
        secrets_dir: PathBuf,
        /// Also release what an earlier apply declared and the directory no longer holds, as
        /// deleting the object would (by the reclaim policy it had).
        #[arg(long)]
        prune: bool,
        /// The registry's storage, where dedicated organization buckets are created.
        #[command(flatten)]
        storage: Storage,
    },
    /// Print the CRDs as YAML, or write one file per CRD into each --out directory.
    Crd {
        /// A directory to write `<name>.yaml` files into (repeatable).
        #[arg(long)]
        out: Vec<PathBuf>,
    },
    /// Apply pending database migrations.
    Migrate {
        #[command(flatten)]
        database: Database,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a container's log is a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Crd { out } => crd(out),
        Command::Migrate { database } => {
            for applied in aerugo_db::migrate(&database.database_url).await? {
                eprintln!("applied {applied}");
            }
            Ok(())
        }
        Command::Apply { common, dir, secrets_dir, prune, storage } => {
            let db = aerugo_db::pool(&common.database.database_url, 4)?;
            let settings = Settings {
                registry_host: common.registry_host,
                resync: Duration::from_secs(300),
                storage: storage.access()?,
                pods_watched: false,
            };
            let outcomes = aerugo_operator::files::apply(db, &dir, secrets_dir, settings, prune).await?;
            let mut stdout = std::io::stdout().lock();
            for outcome in &outcomes {
                std::io::Write::write_fmt(&mut stdout, format_args!("{outcome}\n"))?;
            }
            let failed = outcomes.iter().filter(|o| !o.ready && !o.pruned).count();
            if failed > 0 {
                bail!("{failed} of {} objects are not Ready", outcomes.len());
            }
            Ok(())
        }
        Command::Gc { database, storage, dry_run } => {
            let Some(store) = storage.store().await? else { bail!("no storage to collect: set AERUGO_STORAGE") };
            let db = aerugo_db::pool(&database.database_url, 2)?;
            let client = db.get().await?;
            let (synced, in_use) = aerugo_db::gc::in_use_state(&client).await?;
            drop(client);
            let options = aerugo_operator::collector::Options { batch: GC_BATCH, dry_run, require_in_use: false };
            let c = aerugo_operator::collector::collect(&db, &store, options).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            let mut out = std::io::stdout().lock();
            let protection = match synced {
                Some(at) => format!("{in_use} digests in use by Pods as of {at}"),
                None => "no Pod has been seen: run in a cluster to protect running images".into(),
            };
            std::io::Write::write_fmt(
                &mut out,
                format_args!(
                    "manifests: reviewed {}, {verb} {}, kept in use {} ({protection})\n",
                    c.manifests_reviewed, c.manifests_deleted, c.in_use
                ),
            )?;
            for m in &c.first_manifests {
                std::io::Write::write_fmt(&mut out, format_args!("  {m}\n"))?;
            }
            std::io::Write::write_fmt(
                &mut out,
                format_args!(
                    "blobs: reviewed {}, {verb} {} links, {} objects ({} bytes){}\n",
                    c.reviewed,
                    c.unlinked,
                    c.deleted,
                    c.bytes,
                    if c.failed > 0 { format!(", {} failed", c.failed) } else { String::new() }
                ),
            )?;
            Ok(())
        }
        Command::Run {
            common,
            admin_listen,
            resync_seconds,
            leader_election,
            lease_namespace,
            identity,
            storage,
            gc_interval_seconds,
            gc_review_delay,
            protect_in_use,
            default_registry_file,
            default_registry_configmap,
        } => {
            let store = storage.store().await?;
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            let db = aerugo_db::pool(&common.database.database_url, 8)?;
            aerugo_db::gc::set_review_delay(&db.get().await?, gc_review_delay).await?;
            if !protect_in_use {
                tracing::warn!(
                    "Pods are not watched (--protect-in-use=false): the collector may delete images Pods run"
                );
            }
            let registry = prometheus::Registry::new();
            let metrics = Metrics::new(&registry)?;
            let settings = Settings {
                registry_host: common.registry_host,
                resync: Duration::from_secs(resync_seconds),
                storage: storage.access()?,
                pods_watched: protect_in_use,
            };
            let admin = admin_server(&admin_listen, registry, db.clone())?;
            let admin = tokio::spawn(admin);
            let leadership = if leader_election {
                Some(Leadership::acquire(client.clone(), &lease_namespace, "aerugo-operator", &identity).await?)
            } else {
                None
            };
            let defaults = {
                let default = default_registry_file.map(|file| DefaultRegistry {
                    file,
                    configmap: default_registry_configmap,
                    namespace: lease_namespace.clone(),
                });
                let client = client.clone();
                async move {
                    if let Some(default) = default {
                        aerugo_operator::defaults::keep_applying(client, default).await;
                    }
                }
            };
            let pods = {
                let (client, db) = (client.clone(), db.clone());
                async move {
                    if protect_in_use {
                        aerugo_operator::pods::protect(client, db).await;
                    }
                }
            };
            let cluster = ClusterContext::new(client, db, settings, metrics);
            let collector = {
                let cluster = cluster.clone();
                async move {
                    let Some(store) = store else { return std::future::pending().await };
                    let ctx = &cluster.ctx;
                    let mut every = tokio::time::interval(Duration::from_secs(gc_interval_seconds.max(1)));
                    loop {
                        every.tick().await;
                        if let Err(e) = aerugo_operator::retention::run_undeclared(ctx).await {
                            tracing::warn!(error = %e, "retention runs failed; retrying next interval");
                        }
                        let options = aerugo_operator::collector::Options {
                            batch: GC_BATCH,
                            dry_run: false,
                            require_in_use: protect_in_use,
                        };
                        match aerugo_operator::collector::collect(&ctx.db, &store, options).await {
                            Ok(c) if c.reviewed + c.manifests_reviewed > 0 => tracing::info!(
                                manifests = c.manifests_deleted,
                                unlinked = c.unlinked,
                                objects = c.deleted,
                                bytes = c.bytes,
                                in_use = c.in_use,
                                "garbage collected"
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "garbage collection failed; retrying next interval"),
                        }
                    }
                }
            };
            let controllers = async move {
                tokio::join!(controller::run(cluster), collector, defaults, pods);
            };
            match leadership {
                Some(leadership) => tokio::select! {
                    () = controllers => {}
                    () = leadership.hold() => bail!("leadership lost; exiting so that another replica takes over"),
                    _ = tokio::signal::ctrl_c() => {}
                },
                None => tokio::select! {
                    () = controllers => {}
                    _ = tokio::signal::ctrl_c() => {}
                },
            }
            admin.abort();
            Ok(())
        }
    }
}

fn crd(out: Vec<PathBuf>) -> Result<()> {
    if out.is_empty() {
        let all: Vec<String> = aerugo_crds::files().into_iter().map(|(_, yaml)| yaml).collect();
        std::io::Write::write_all(&mut std::io::stdout(), all.join("---\n").as_bytes())?;
    }
    for dir in out {
        for (file, yaml) in aerugo_crds::files() {
            std::fs::write(dir.join(&file), yaml).with_context(|| format!("writing {file}"))?;
            eprintln!("wrote {}", dir.join(&file).display());
        }
    }
    Ok(())
}

fn admin_server(listen: &str, registry: prometheus::Registry, db: aerugo_db::Pool) -> Result<actix_web::dev::Server> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let registry = web::Data::new(registry);
    let db = web::Data::new(db);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(registry.clone())
            .app_data(db.clone())
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
            .route(
                "/readyz",
                web::get().to(|db: web::Data<aerugo_db::Pool>| async move {
                    match db.get().await {
                        Ok(client) if client.simple_query("SELECT 1").await.is_ok() => HttpResponse::Ok().body("ok"),
                        _ => HttpResponse::ServiceUnavailable().body("database unreachable"),
                    }
                }),
            )
            .route(
                "/metrics",
                web::get().to(|registry: web::Data<prometheus::Registry>| async move {
                    let mut body = String::new();
                    match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body) {
                        Ok(()) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body),
                        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
                    }
                }),
            )
    })
    .workers(1)
    .bind(listen)
    .with_context(|| format!("binding the admin server to {listen}"))?
    .run())
}
