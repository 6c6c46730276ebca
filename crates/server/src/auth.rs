//! Users, passwords and bearer tokens. Passwords are stored as Argon2id PHC strings; tokens
//! are random, shown once, and stored only as their SHA-256 digest.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use cityward_store::{SessionRow, StateStore, UserRow};
use sha2::{Digest, Sha256};

use crate::node::{NodeError, Role, Token, User};

/// `n` random bytes from the OS, as hex: tokens, secrets, ids.
pub(crate) fn random_hex(n: usize) -> Result<String, NodeError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| NodeError::Internal(format!("no OS randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a user with an Argon2id password hash.
pub fn create_user(
    state: &dyn StateStore,
    username: &str,
    password: &str,
    role: Role,
    unit: Option<&str>,
) -> Result<(), NodeError> {
    if matches!(role, Role::Dispatcher | Role::Responder) && unit.is_none_or(|u| u.trim().is_empty()) {
        return Err(NodeError::Invalid(format!(
            "a {} acts for a unit, whose region is their jurisdiction; give `{username}` a unit from the city's units.csv (e.g. --unit unit-city for the whole city)",
            role.as_str()
        )));
    }
    if password.len() < 4 {
        return Err(NodeError::Invalid(format!(
            "password for `{username}` is too short; use at least 4 characters"
        )));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| NodeError::Internal(format!("no OS randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| NodeError::Internal(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| NodeError::Internal(format!("password hashing failed: {e}")))?
        .to_string();
    state.create_user(username, &hash, role.as_str(), unit)?;
    Ok(())
}

/// Checks a password and opens a session lasting `ttl`.
pub fn login(
    state: &dyn StateStore,
    username: &str,
    password: &str,
    ttl: Duration,
) -> Result<Token, NodeError> {
    let user = state.user(username)?.ok_or(NodeError::BadLogin)?;
    let parsed = PasswordHash::new(&user.password_hash).map_err(|e| {
        NodeError::Internal(format!("stored hash of `{username}` is unreadable: {e}"))
    })?;
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .map_err(|_| NodeError::BadLogin)?;
    let role = Role::parse(&user.role).ok_or_else(|| {
        NodeError::Internal(format!(
            "user `{username}` has unknown role `{}`",
            user.role
        ))
    })?;
    let token = random_hex(32)?;
    let expires =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    state.create_session(&token_digest(&token), username, expires)?;
    Ok(Token {
        token,
        role,
        expires_at: cityward_model::format_time(&expires),
    })
}

/// The user behind a token, if the session exists and has not expired.
pub fn authenticate(state: &dyn StateStore, token: &str) -> Result<Option<User>, NodeError> {
    let Some(row) = state.session(&token_digest(token), Utc::now())? else {
        return Ok(None);
    };
    let role = Role::parse(&row.role).ok_or_else(|| {
        NodeError::Internal(format!(
            "user `{}` has unknown role `{}`",
            row.username, row.role
        ))
    })?;
    Ok(Some(User {
        username: row.username,
        role,
        unit: row.unit,
        supervisor: row.supervisor,
    }))
}

/// How much an API token for a machine may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Post events only.
    Ingest,
    /// Read alerts and rules, within the token's unit's jurisdiction.
    Read,
}

/// A new API token: the token itself is in the answer once and never again.
pub fn create_api_token(
    state: &dyn StateStore,
    name: &str,
    scope: TokenScope,
    unit: Option<&str>,
    valid_for: chrono::Duration,
) -> Result<serde_json::Value, NodeError> {
    if name.trim().is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(NodeError::Invalid(format!("token name `{name}` must be 1-64 letters, digits, `-`, `_` or `.`")));
    }
    if valid_for <= chrono::Duration::zero() || valid_for > chrono::Duration::days(3660) {
        return Err(NodeError::Invalid("`days` must be between 1 and 3660".into()));
    }
    let role = match scope {
        TokenScope::Ingest => Role::Ingest,
        TokenScope::Read => Role::Reader,
    };
    match state.user(name)? {
        // A machine user may hold several tokens (rotation); a person's name is refused.
        Some(u) if u.role != role.as_str() => {
            return Err(NodeError::Conflict(format!("`{name}` is already a {} user; choose another token name", u.role)));
        }
        Some(_) => {}
        None => {
            // Nobody knows this password: machine users authenticate by token only.
            create_user(state, name, &random_hex(32)?, role, unit)?;
        }
    }
    let token = format!("cwt_{}", random_hex(32)?);
    let digest = token_digest(&token);
    let expires = Utc::now() + valid_for;
    state.create_session(&digest, name, expires)?;
    Ok(serde_json::json!({
        "id": &digest[..16],
        "name": name,
        "scope": role.as_str(),
        "unit": unit,
        "token": token,
        "expires_at": cityward_model::format_time(&expires),
    }))
}

/// Every API token: the sessions of machine users (ingest and reader), with their users.
fn api_tokens(state: &dyn StateStore) -> Result<Vec<(UserRow, SessionRow)>, NodeError> {
    let mut out = Vec::new();
    for user in state.list_users()? {
        if user.role == Role::Ingest.as_str() || user.role == Role::Reader.as_str() {
            for s in state.list_sessions(&user.username)? {
                out.push((user.clone(), s));
            }
        }
    }
    Ok(out)
}

/// The id of an API token as listed: the first 16 hex digits of its digest.
fn token_id(s: &SessionRow) -> &str {
    &s.token_hash[..16.min(s.token_hash.len())]
}

/// Every API token, without the tokens.
pub fn list_api_tokens(state: &dyn StateStore) -> Result<serde_json::Value, NodeError> {
    let items: Vec<serde_json::Value> = api_tokens(state)?
        .iter()
        .map(|(user, s)| {
            serde_json::json!({
                "id": token_id(s),
                "name": user.username,
                "scope": user.role,
                "unit": user.unit,
                "created_at": cityward_model::format_time(&s.created_at),
                "expires_at": cityward_model::format_time(&s.expires_at),
            })
        })
        .collect();
    Ok(serde_json::json!({"items": items, "next": null}))
}

/// Revokes the API token with `id` (as listed).
pub fn revoke_api_token(state: &dyn StateStore, id: &str) -> Result<(), NodeError> {
    match api_tokens(state)?.into_iter().find(|(_, s)| token_id(s) == id) {
        Some((_, s)) => {
            state.delete_session(&s.token_hash)?;
            Ok(())
        }
        None => Err(NodeError::NotFound(format!("no API token `{id}`; list them with GET /api/v1/tokens"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_work_and_are_not_stored_in_clear() {
        let state = cityward_store::SqliteState::in_memory().unwrap();
        create_user(&state, "duty", "s3cret!", Role::Dispatcher, Some("unit-1")).unwrap();
        assert!(!state
            .user("duty")
            .unwrap()
            .unwrap()
            .password_hash
            .contains("s3cret"));
        assert!(matches!(
            login(&state, "duty", "wrong", Duration::from_secs(60)),
            Err(NodeError::BadLogin)
        ));
        assert!(matches!(
            login(&state, "nobody", "x", Duration::from_secs(60)),
            Err(NodeError::BadLogin)
        ));
        let token = login(&state, "duty", "s3cret!", Duration::from_secs(60)).unwrap();
        let user = authenticate(&state, &token.token).unwrap().unwrap();
        assert_eq!(
            (user.username.as_str(), user.role),
            ("duty", Role::Dispatcher)
        );
        assert!(authenticate(&state, "not-a-token").unwrap().is_none());
    }
}
