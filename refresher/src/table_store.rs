//! Reading and writing the table ConfigMap: only on change, with optimistic concurrency
//! (resourceVersion) and retry on conflict — every retry re-reads and re-merges, so a concurrent
//! writer's entries are never lost.

use crate::error::Error;
use crate::stored_table::{NextContent, StoredTable, next_content};
use capa_core::table::Table;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

const MAX_CONFLICT_RETRIES: usize = 8;

/// Where the table lives.
#[derive(Debug, Clone)]
pub struct TableStore {
    pub name: String,
    pub namespace: String,
}

/// Result of a write attempt.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Nothing to write: the stored table and the regions it covers.
    Unchanged(Table, BTreeSet<String>),
    Written {
        content: NextContent,
        conflicts: usize,
    },
}

impl TableStore {
    fn api(&self, client: &Client) -> Api<ConfigMap> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// The ConfigMap (if any) and what it holds.
    pub async fn read(
        &self,
        client: &Client,
    ) -> Result<(Option<ConfigMap>, StoredTable), kube::Error> {
        match self.api(client).get(&self.name).await {
            Ok(cm) => {
                let stored = StoredTable::read(
                    cm.data.as_ref().unwrap_or(&Default::default()),
                    cm.metadata
                        .annotations
                        .as_ref()
                        .unwrap_or(&Default::default()),
                );
                Ok((Some(cm), stored))
            }
            Err(e) if crate::cluster::is_not_found(&e) => Ok((None, StoredTable::default())),
            Err(e) => Err(e),
        }
    }

    /// The ConfigMap object that holds `content` (for `--dry-run` and for creation).
    pub fn object(&self, base: Option<ConfigMap>, content: &NextContent) -> ConfigMap {
        let mut cm = base.unwrap_or_else(|| ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "capa-refresher".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        });
        let annotations = cm.metadata.annotations.get_or_insert_with(Default::default);
        annotations.extend(content.annotations.clone());
        cm.data = Some(content.data.clone());
        cm
    }

    /// Merges `fetched` into the stored table and writes it if anything changed.
    pub async fn merge_and_write(
        &self,
        client: &Client,
        fetched: &Table,
        regions: &BTreeSet<String>,
        stale_after: Duration,
    ) -> Result<WriteOutcome, Error> {
        let api = self.api(client);
        for conflicts in 0..MAX_CONFLICT_RETRIES {
            let (current, stored) = self
                .read(client)
                .await
                .map_err(Error::kube(format!("read ConfigMap {}", self.path())))?;
            let Some(content) =
                next_content(&stored, fetched, regions, SystemTime::now(), stale_after)
            else {
                return Ok(WriteOutcome::Unchanged(stored.table, stored.regions));
            };
            let exists = current.is_some();
            let cm = self.object(current, &content);
            let res = if exists {
                api.replace(&self.name, &PostParams::default(), &cm).await
            } else {
                api.create(&PostParams::default(), &cm).await
            };
            match res {
                Ok(_) => return Ok(WriteOutcome::Written { content, conflicts }),
                Err(e) if crate::cluster::is_conflict(&e) => {
                    tracing::info!(configmap = %self.name, attempt = conflicts + 1, "conflict writing the table; re-reading and merging again");
                }
                Err(e) => {
                    return Err(Error::kube(format!("write ConfigMap {}", self.path()))(e));
                }
            }
        }
        Err(Error::TableConflict {
            configmap: self.path(),
            attempts: MAX_CONFLICT_RETRIES,
        })
    }

    /// `namespace/name`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
