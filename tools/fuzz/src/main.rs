//! `capa-fuzz`: the policy's fuzz campaign. See `make fuzz` and docs/reliability.md.
//!
//! Usage: capa-fuzz [--count N] [--seed S] [--threads T] [--policy policy.wasm] [--replay K]
//!                  [--fixtures DIR]

use anyhow::{Context, Result, bail};
use capa_fuzz::inputs::{Corpus, generate};
use capa_fuzz::rng::Rng;
use capa_fuzz::{MEMORY_LIMIT, fixture, oracle};
use e2e_tests::{Policy, paths};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Args {
    count: u64,
    seed: u64,
    threads: u64,
    policy: PathBuf,
    replay: Option<u64>,
    fixtures: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        count: 10_000,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        threads: 2,
        policy: paths::policy_wasm(),
        replay: None,
        fixtures: paths::workspace().join("tools/fuzz/fixtures"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => a.count = value()?.replace('_', "").parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--threads" => a.threads = value()?.parse::<u64>()?.max(1),
            "--policy" => a.policy = value()?.into(),
            "--replay" => a.replay = Some(value()?.parse()?),
            "--fixtures" => a.fixtures = value()?.into(),
            "-h" | "--help" => {
                println!(
                    "capa-fuzz [--count N] [--seed S] [--threads T] [--policy policy.wasm] [--replay K] [--fixtures DIR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let corpus = Corpus::load(&paths::workspace())?;
    println!(
        "capa-fuzz: seed {} (replay: make fuzz SEED={}), {} inputs, {} threads, policy {}, memory limit {} MiB per evaluation",
        a.seed,
        a.seed,
        a.replay.map_or(a.count, |_| 1),
        a.threads,
        a.policy.display(),
        MEMORY_LIMIT >> 20
    );
    if let Some(k) = a.replay {
        let policy = Policy::load_with_memory_limit(&a.policy, MEMORY_LIMIT)?;
        let input = generate(&corpus, &mut Rng::for_input(a.seed, k));
        println!(
            "input {k}: kind {}, {} payload bytes",
            input.kind,
            input.payload.len()
        );
        return match oracle::check(&policy, &input) {
            Ok(_) => {
                println!("passes");
                Ok(())
            }
            Err(e) => bail!("fails: {e}"),
        };
    }
    let start = Instant::now();
    let done = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, &'static str, String)>> = Mutex::new(Vec::new());
    let kinds: Mutex<BTreeMap<&'static str, (u64, u64, u64)>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..a.threads {
            let (corpus, done, failures, kinds, a) = (&corpus, &done, &failures, &kinds, &a);
            handles.push(s.spawn(move || -> Result<()> {
                let policy = Policy::load_with_memory_limit(&a.policy, MEMORY_LIMIT)?;
                let mut local: BTreeMap<&'static str, (u64, u64, u64)> = BTreeMap::new();
                let mut k = t;
                while k < a.count {
                    let input = generate(corpus, &mut Rng::for_input(a.seed, k));
                    let entry = local.entry(input.kind).or_default();
                    entry.0 += 1;
                    match oracle::check(&policy, &input) {
                        Ok(seen) => {
                            entry.1 += u64::from(seen.mutated);
                            entry.2 += u64::from(seen.warned);
                        }
                        Err(e) => {
                            let file = a.fixtures.join(format!("failed-{}-{k}.json", a.seed));
                            let _ = std::fs::create_dir_all(&a.fixtures);
                            let _ = std::fs::write(
                                &file,
                                serde_json::to_vec_pretty(&fixture::to_json(&input, a.seed, k, &e))
                                    .unwrap_or_default(),
                            );
                            eprintln!(
                                "FAIL input {k} ({}): {e}\n  replay: capa-fuzz --seed {} --replay {k}; kept as {}",
                                input.kind,
                                a.seed,
                                file.display()
                            );
                            if let Ok(mut f) = failures.lock() {
                                f.push((k, input.kind, e));
                            }
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let step = (a.count / 10).max(1);
                    if n.is_multiple_of(step) {
                        eprintln!(
                            "  {n}/{} inputs, {:.0} s",
                            a.count,
                            start.elapsed().as_secs_f64()
                        );
                    }
                    k += a.threads;
                }
                if let Ok(mut all) = kinds.lock() {
                    for (kind, (n, m, w)) in local {
                        let e = all.entry(kind).or_default();
                        e.0 += n;
                        e.1 += m;
                        e.2 += w;
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a fuzz thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let failures = failures.into_inner().unwrap_or_default();
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "kind", "inputs", "mutated", "warned"
    );
    for (kind, (n, m, w)) in kinds.into_inner().unwrap_or_default() {
        println!("{kind:<10} {n:>10} {m:>10} {w:>10}");
    }
    println!(
        "{} inputs, {} failures, {:.1} s wall ({:.0} inputs/s; each input: 2 evaluations, +1 re-admission when mutated)",
        done.load(Ordering::Relaxed),
        failures.len(),
        secs,
        done.load(Ordering::Relaxed) as f64 / secs
    );
    if !failures.is_empty() {
        bail!(
            "{} inputs failed (seed {}); they are kept in {}",
            failures.len(),
            a.seed,
            a.fixtures.display()
        );
    }
    Ok(())
}
