//! `aerugo-operator`: `run` (the controllers, in a cluster), `apply -f DIR` (file mode, no
//! cluster), `crd` (print or write the CRD YAML) and `migrate`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aerugo_operator::context::{Context, Metrics, Settings};
use aerugo_operator::controller::{self, ClusterContext};
use aerugo_operator::leader::Leadership;
use aerugo_operator::world::World;
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
    },
    /// Print the CRDs as YAML, or write one file per CRD into --out.
    Crd {
        /// A directory to write `<name>.yaml` files into.
        #[arg(long)]
        out: Option<PathBuf>,
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
        .init();
    match Cli::parse().command {
        Command::Crd { out } => crd(out),
        Command::Migrate { database } => {
            for applied in aerugo_db::migrate(&database.database_url).await? {
                eprintln!("applied {applied}");
            }
            Ok(())
        }
        Command::Apply { common, dir, secrets_dir } => {
            let db = aerugo_db::pool(&common.database.database_url, 4)?;
            let settings = Settings { registry_host: common.registry_host, resync: Duration::from_secs(300) };
            let outcomes = aerugo_operator::files::apply(db, &dir, secrets_dir, settings).await?;
            let mut stdout = std::io::stdout().lock();
            for outcome in &outcomes {
                std::io::Write::write_fmt(&mut stdout, format_args!("{outcome}\n"))?;
            }
            let failed = outcomes.iter().filter(|o| !o.ready).count();
            if failed > 0 {
                bail!("{failed} of {} objects are not Ready", outcomes.len());
            }
            Ok(())
        }
        Command::Run { common, admin_listen, resync_seconds, leader_election, lease_namespace, identity } => {
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            let db = aerugo_db::pool(&common.database.database_url, 8)?;
            let registry = prometheus::Registry::new();
            let metrics = Metrics::new(&registry)?;
            let settings =
                Settings { registry_host: common.registry_host, resync: Duration::from_secs(resync_seconds) };
            let admin = admin_server(&admin_listen, registry, db.clone())?;
            let admin = tokio::spawn(admin);
            let leadership = if leader_election {
                Some(Leadership::acquire(client.clone(), &lease_namespace, "aerugo-operator", &identity).await?)
            } else {
                None
            };
            let cluster = Arc::new(ClusterContext {
                recorder: kube::runtime::events::Recorder::new(client.clone(), "aerugo-operator".into()),
                ctx: Context {
                    db,
                    world: World::Cluster(client.clone()),
                    settings,
                    metrics,
                    failures: Mutex::default(),
                },
                client,
            });
            let controllers = controller::run(cluster);
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

fn crd(out: Option<PathBuf>) -> Result<()> {
    match out {
        Some(dir) => {
            for (file, yaml) in aerugo_crds::files() {
                std::fs::write(dir.join(&file), yaml).with_context(|| format!("writing {file}"))?;
                eprintln!("wrote {}", dir.join(&file).display());
            }
        }
        None => {
            let all: Vec<String> = aerugo_crds::files().into_iter().map(|(_, yaml)| yaml).collect();
            std::io::Write::write_all(&mut std::io::stdout(), all.join("---\n").as_bytes())?;
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
