//! Applying an [`Outcome`](crate::Outcome) to a store, with the retry rule for
//! compare-and-swap conflicts. Shared by every host so they agree on it.

pub use crate::kv::KvStore;
use crate::kv::{KvError, Write};
use crate::outcome::Outcome;

/// How often a conflicting input is retried before giving up. Conflicts only
/// happen between joins/leaves racing on one room, so a handful is plenty.
pub const MAX_ATTEMPTS: usize = 8;

/// Run `step` against `store` until its writes apply. CAS writes are applied
/// first, so a conflict leaves no partial effect; plain writes follow.
/// Returns the outcome whose writes were applied, or `None` if every attempt
/// conflicted.
pub fn run<S: KvStore + ?Sized>(
    store: &mut S,
    mut step: impl FnMut(&S) -> Outcome,
) -> Result<Option<Outcome>, KvError> {
    for _ in 0..MAX_ATTEMPTS {
        let outcome = step(store);
        if apply(store, &outcome.writes)? {
            return Ok(Some(outcome));
        }
    }
    Ok(None)
}

/// Apply `writes`; false if a CAS lost (then nothing was written).
pub fn apply<S: KvStore + ?Sized>(store: &mut S, writes: &[Write]) -> Result<bool, KvError> {
    for w in writes {
        if let Write::Cas {
            key,
            expected,
            value,
        } = w
        {
            if !store.compare_and_swap(key, expected.as_deref(), value)? {
                return Ok(false);
            }
        }
    }
    for w in writes {
        match w {
            Write::Put { key, value } => store.put(key, value)?,
            Write::Delete { key } => store.delete(key)?,
            Write::Cas { .. } => {}
        }
    }
    Ok(true)
}
