//! The policy's fuzz campaign (`make fuzz`): inputs from [`inputs`], each run through the compiled
//! `policy.wasm` in a fresh, memory-limited instance and judged by [`oracle`]. Deterministic:
//! input `k` of seed `s` is always the same ([`rng::Rng::for_input`]), so a failure is replayed
//! from the two numbers, and kept as a fixture ([`fixture`]).

pub mod fixture;
pub mod inputs;
pub mod oracle;
/// The generator lives with the other test servers (the chaos soak uses it too).
pub use e2e_tests::rng;

/// The most linear memory one evaluation may use: 64 MiB. Inputs go up to a 10 MB host answer
/// and 1 MB strings in the request; the policy server gives a module no more than it asks for,
/// and a policy that needs more than this for one MachineSet is a bug.
pub const MEMORY_LIMIT: u64 = 64 << 20;
