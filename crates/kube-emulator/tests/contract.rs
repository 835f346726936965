//! The contract tests (`contract_suite/mod.rs`), run three ways: against the emulator in process,
//! against the emulator over loopback HTTP (the path a real binary with a kubeconfig takes), and
//! against a real cluster — `KUBE_E2E=1 cargo nextest run -p aerugo-kube-emulator --run-ignored
//! only` with a kind or k3d context current — so drift from the real API server can be caught.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

mod contract_suite;
use contract_suite as contract;

use aerugo_kube_emulator::Emulator;
use anyhow::{Result, ensure};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn loopback_client(server: &aerugo_kube_emulator::Loopback) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let emulator = aerugo_kube_emulator::Emulator::new();
                    super::contract::run(emulator.client(), stringify!($name), super::contract::$name).await
                }
            )*
        }

        mod loopback {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let emulator = aerugo_kube_emulator::Emulator::new();
                    let server = emulator.serve().await?;
                    let client = super::loopback_client(&server).await?;
                    super::contract::run(client, stringify!($name), super::contract::$name).await
                }
            )*
        }

        mod cluster {
            $(
                #[tokio::test]
                #[ignore = "needs a real cluster: KUBE_E2E=1 with a kind or k3d context"]
                async fn $name() -> anyhow::Result<()> {
                    anyhow::ensure!(std::env::var("KUBE_E2E").as_deref() == Ok("1"), "set KUBE_E2E=1 to run against the current kube context");
                    let client = kube::Client::try_default().await?;
                    super::contract::run(client, stringify!($name), super::contract::$name).await
                }
            )*
        }
    };
}

contracts!(
    crud_and_conflicts,
    generation_and_status,
    finalizers_and_deletion,
    patch_formats,
    schema_pruning_defaults_validation,
    lists_and_selectors,
    watch_streams_changes,
    watch_too_old_is_an_error_event,
    watch_timeout_ends_the_stream,
    server_side_apply,
    dry_run_stores_nothing,
    secret_string_data,
    version_answers,
);

/// The loopback server is plain HTTP/1.1 that a kubeconfig points at.
#[tokio::test]
async fn kubeconfig_points_at_the_loopback_server() -> Result<()> {
    let emulator = Emulator::new();
    let server = emulator.serve().await?;
    ensure!(server.url().starts_with("http://127.0.0.1:"));
    let client = loopback_client(&server).await?;
    ensure!(client.default_namespace() == "default");
    ensure!(client.apiserver_version().await?.git_version.contains("emulator"));
    Ok(())
}
