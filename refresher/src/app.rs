//! The refresher process: the cluster-less dry run, one refresh (`--once`, `--dry-run`), or the
//! service (HTTP endpoints, leader election, the refresh schedule and the MachineSet watch) until
//! SIGTERM.

use crate::config::Config;
use crate::context::Context;
use crate::{
    capi, heal, leader, metrics, output, policy_settings, refresh, server, service, standalone,
    stored_table, table_store,
};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs the refresher as `cfg` says; the exit status of the process.
pub async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    if !cfg.regions.is_empty() {
        return cluster_less(&cfg).await;
    }
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the Kubernetes API ({e}); run in a cluster or set KUBECONFIG")
    })?;
    let metrics = Arc::new(metrics::Metrics::new());
    let opts = refresh::Options {
        namespace: cfg.namespace.clone(),
        store: table_store::TableStore {
            name: cfg.configmap_name.clone(),
            namespace: cfg.configmap_namespace.clone(),
        },
        dry_run: cfg.dry_run,
        stale_after: cfg.refresh_interval / 2,
        // the service's healing retries on its own (with backoff): the refresh's one second try
        // is for --once
        readmit_retry_after: Some(cfg.readmit_retry_after).filter(|d| !d.is_zero() && cfg.once),
        cluster_api: cfg.cluster_api.then(|| capi::CapiOptions {
            capa_namespace: cfg.capa_namespace.clone(),
            default_credentials: cfg.cluster_api_default_credentials,
            ec2_endpoint: capi::CapiOptions::endpoint_from_env(|k| std::env::var(k).ok()),
        }),
        policy: Some(cfg.policy_name.clone())
            .filter(|n| !n.is_empty())
            .map(|name| policy_settings::PolicyRef {
                name,
                kubewarden_namespace: cfg.kubewarden_namespace.clone(),
            }),
    };
    let ctx = Context::new(client.clone(), metrics.clone())
        .with_readmissions_per_minute(cfg.max_readmissions_per_minute);
    let budget = ctx.budget.clone();
    let refresher = refresh::Refresher::new(ctx, opts);

    if cfg.once || cfg.dry_run {
        let refresher = refresher;
        let report = refresher.refresh(None).await?;
        for (region, why) in &report.regions_failed {
            tracing::error!(region, reason = %why, "region not refreshed");
        }
        if cfg.dry_run {
            let cm = report
                .dry_run_configmap
                .as_ref()
                .unwrap_or(&serde_json::Value::Null);
            output::print(
                &cfg,
                cm,
                &report.fetched,
                &report.regions_ok,
                report.success(),
            )?;
        }
        return Ok(if report.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let stop = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(stop.clone()));
    let health = Arc::new(server::Health::default());
    let mut servers = Vec::new();
    match (cfg.metrics_bind_address.0, cfg.health_addr.0) {
        (Some(m), Some(h)) if m == h => servers.push((m, true, true)),
        (m, h) => {
            if let Some(m) = m {
                servers.push((m, true, false));
            }
            if let Some(h) = h {
                servers.push((h, false, true));
            }
        }
    }
    let server_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (addr, with_metrics, with_health) in servers {
        let (metrics, health, stop) = (metrics.clone(), health.clone(), stop.clone());
        let failed = server_failed.clone();
        tokio::spawn(async move {
            if let Err(e) = server::serve(
                addr,
                with_metrics,
                with_health,
                metrics,
                health,
                stop.clone(),
            )
            .await
            {
                tracing::error!(error = format!("{e:#}"), "HTTP server failed; stopping");
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                stop.cancel();
            }
        });
    }
    health.set_ready(true);

    let mut ledger = None;
    if cfg.leader_elect {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("capa-refresher-{}", std::process::id()));
        let elector = Arc::new(leader::LeaderElector::new(
            &client,
            cfg.lease_namespace(),
            identity,
            cfg.leader_elect_lease_duration,
        ));
        let Some(acquired) = elector.acquire(&stop).await else {
            return Ok(ExitCode::SUCCESS);
        };
        let keeper = elector.clone();
        let keep_stop = stop.clone();
        tokio::spawn(async move { keeper.keep(keep_stop, acquired).await });
        ledger = Some(elector);
    }
    let refresher = Arc::new(refresher.with_scan_limit(cfg.min_region_scan_interval, ledger));
    refresher.load_recorded_scans().await;
    service::run(
        refresher,
        cfg.refresh_interval,
        cfg.min_region_scan_interval,
        service::Healing {
            options: heal::HealOptions {
                backoff_max: cfg.heal_backoff_max,
                ..heal::HealOptions::default()
            },
            budget,
        },
        stop.clone(),
    )
    .await;
    if server_failed.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run --region …`: no Kubernetes at all; the default AWS credential chain.
async fn cluster_less(cfg: &Config) -> anyhow::Result<ExitCode> {
    let metrics = metrics::Metrics::new();
    let scan = standalone::scan(&cfg.regions, &metrics).await?;
    let now = std::time::SystemTime::now();
    let content = stored_table::next_content(
        &stored_table::StoredTable::default(),
        &scan.table,
        &scan.regions,
        now,
        std::time::Duration::ZERO,
    );
    let store = table_store::TableStore {
        name: cfg.configmap_name.clone(),
        namespace: cfg.configmap_namespace.clone(),
    };
    let cm = match content {
        Some(content) => serde_json::to_value(store.object(None, &content))?,
        None => serde_json::Value::Null,
    };
    output::print(cfg, &cm, &scan.table, &scan.regions, true)?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.cancel();
}
