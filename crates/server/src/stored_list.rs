//! A small list kept as JSON under one `meta` key of the state store (legal holds, sharing
//! grants): read whole, changed under one lock (read, change, write), so that two changes
//! at once never lose one another.

use std::sync::Mutex;

use cityward_store::StateStore;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::NodeError;

/// Serializes every change to every list (they are rare).
static CHANGING: Mutex<()> = Mutex::new(());

/// The list under `key` (empty when never written); `what` names it in errors.
pub(crate) fn load<T: DeserializeOwned>(state: &dyn StateStore, key: &str, what: &str) -> Result<Vec<T>, NodeError> {
    match state.meta_get(key)? {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| NodeError::Internal(format!("the {what} stored in the state database cannot be read ({e}); restore the database from a backup"))),
    }
}

/// Applies `change` to the list under `key` and stores the result when `change` succeeds.
pub(crate) fn change<T, R>(
    state: &dyn StateStore,
    key: &str,
    what: &str,
    change: impl FnOnce(&mut Vec<T>) -> Result<R, NodeError>,
) -> Result<R, NodeError>
where
    T: Serialize + DeserializeOwned,
{
    let _one = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let mut list = load(state, key, what)?;
    let answer = change(&mut list)?;
    let text = serde_json::to_string(&list).map_err(|e| NodeError::Internal(e.to_string()))?;
    state.meta_set(key, &text)?;
    Ok(answer)
}
