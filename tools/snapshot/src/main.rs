//! `make snapshot`: regenerates `policy/data/builtin-instance-types.txt` from the pinned moto through
//! the refresher (see `capa_test_servers::snapshot`), and says what changed.

use anyhow::{Context, Result};
use capa_core::builtin;
use capa_test_servers::servers::Ec2;
use capa_test_servers::snapshot;
use std::collections::BTreeMap;

fn main() -> Result<()> {
    let file = snapshot::snapshot_file();
    let before = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| builtin::parse(&t).ok());
    eprintln!("starting moto and the EC2 proxy …");
    let ec2 = Ec2::start()?;
    let text = snapshot::generate(&ec2, None)?;
    let after = builtin::parse(&text).context("the refresher printed a malformed snapshot")?;
    std::fs::write(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "{}: {} instance types, source {:?}, date {}",
        file.display(),
        after.entries.len(),
        after.source,
        after.date
    );
    if let Some(before) = before {
        let old: BTreeMap<_, _> = before.entries.into_iter().collect();
        let new: BTreeMap<_, _> = after.entries.into_iter().collect();
        let added = new.keys().filter(|k| !old.contains_key(*k)).count();
        let removed = old.keys().filter(|k| !new.contains_key(*k)).count();
        let changed = new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .count();
        println!(
            "compared with the previous file: {added} added, {removed} removed, {changed} changed"
        );
    }
    Ok(())
}
