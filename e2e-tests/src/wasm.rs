//! Loading and calling a waPC policy module with wasmtime, a fresh instance per call.

use crate::capabilities::HostCapabilities;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use wapc::WapcHost;
use wasmtime_provider::{WasmtimeEngineProviderBuilder, WasmtimeEngineProviderPre};

/// A compiled policy module. Compiling happens once; every call instantiates it anew, as the
/// Kubewarden policy server does for every admission request.
pub struct Policy {
    pre: WasmtimeEngineProviderPre,
}

impl Policy {
    /// Compiles a module.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read the policy module {} (build it first: `make policy.wasm`, or set CAPA_POLICY_WASM)",
                path.display()
            )
        })?;
        Self::from_bytes(&bytes).with_context(|| format!("cannot compile {}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let pre = WasmtimeEngineProviderBuilder::new()
            .module_bytes(bytes)
            .build_pre()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Policy { pre })
    }

    /// Compiles a module whose instances get at most `max_memory` bytes of linear memory: a
    /// `memory.grow` past it fails, and the guest's allocator then aborts (a trap). The fuzz
    /// campaign runs the policy this way, so "uses too much memory" is a failure it sees.
    pub fn load_with_memory_limit(path: &Path, max_memory: u64) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the policy module {}", path.display()))?;
        let mut config = wasmtime::Config::new();
        config
            .memory_reservation(max_memory)
            .memory_reservation_for_growth(0)
            .memory_may_move(false);
        let engine = wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pre = WasmtimeEngineProviderBuilder::new()
            .engine(engine)
            .module_bytes(&bytes)
            .build_pre()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Policy { pre })
    }

    /// Instantiates the module (running `wapc_init`) with `caps` answering its host calls.
    pub fn instantiate(&self, caps: Arc<dyn HostCapabilities>) -> Result<WapcHost> {
        let engine = self
            .pre
            .rehydrate(None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let callback =
            move |_id: u64, binding: &str, namespace: &str, operation: &str, payload: &[u8]| {
                // the policy's log events: the policy server prints them, they answer nothing
                if (binding, namespace, operation) == ("kubewarden", "tracing", "log") {
                    return Ok(Vec::new());
                }
                caps.host_call(binding, namespace, operation, payload)
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
            };
        WapcHost::new(Box::new(engine), Some(Box::new(callback)))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// One call of `operation` in a fresh instance.
    pub fn call(
        &self,
        operation: &str,
        payload: &[u8],
        caps: Arc<dyn HostCapabilities>,
    ) -> Result<Vec<u8>> {
        let host = self.instantiate(caps)?;
        host.call(operation, payload)
            .map_err(|e| anyhow::anyhow!("the policy returned an error from {operation}: {e}"))
    }
}
