//! Users, passwords and bearer tokens. Passwords are stored as Argon2id PHC strings; tokens
//! are random, shown once, and stored only as their SHA-256 digest.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use cityward_store::StateStore;
use sha2::{Digest, Sha256};

use crate::node::{NodeError, Role, Token, User};

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
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| NodeError::Internal(format!("no OS randomness: {e}")))?;
    let token = hex::encode(bytes);
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
    }))
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
