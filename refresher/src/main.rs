//! capa-refresher: keeps the capa-annotator instance-type ConfigMap current from EC2.

use capa_refresher::config::Config;
use capa_refresher::telemetry;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = Config::parse();
    telemetry::init(cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(capa_refresher::run(cfg)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "capa-refresher stopped");
            ExitCode::FAILURE
        }
    }
}
