//! Django's password hashes (`django.contrib.auth.hashers`), verified here so that a login page
//! served by this server accepts a Django site's users.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::signing::constant_time_eq;

/// A stored password this crate cannot check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// An algorithm other than the supported ones (`pbkdf2_sha256`, `pbkdf2_sha1`, `argon2`,
    /// `bcrypt_sha256`, `scrypt`); Django's legacy unsalted hashes are not accepted.
    #[error("unsupported password hasher {0:?} (supported: pbkdf2_sha256, pbkdf2_sha1, argon2, bcrypt_sha256, scrypt)")]
    Unsupported(String),
    /// The stored value is not in its hasher's format.
    #[error("malformed {0} password hash")]
    Malformed(&'static str),
}

/// True when `password` matches `encoded`, a value of `auth_user.password` (Django's
/// `check_password`). An unusable password (Django's `set_unusable_password`, starting with
/// `!`) never matches.
///
/// This is slow on purpose (Django's default is 1,000,000 PBKDF2 iterations): call it off the
/// async runtime, e.g. in `tokio::task::spawn_blocking`.
///
/// # Errors
/// [`HashError`] when the hash's algorithm is not supported or its value is malformed.
pub fn check_password(password: &str, encoded: &str) -> Result<bool, HashError> {
    if encoded.is_empty() || encoded.starts_with('!') {
        return Ok(false);
    }
    let (algorithm, rest) = encoded.split_once('$').ok_or(HashError::Malformed("password"))?;
    match algorithm {
        "pbkdf2_sha256" => pbkdf2(password, rest, Prf::Sha256),
        "pbkdf2_sha1" => pbkdf2(password, rest, Prf::Sha1),
        "argon2" => argon2(password, rest),
        "bcrypt_sha256" => bcrypt_sha256(password, rest),
        "scrypt" => scrypt(password, rest),
        other => Err(HashError::Unsupported(other.to_owned())),
    }
}

/// The HMAC a PBKDF2 hash was made with.
#[derive(Clone, Copy)]
enum Prf {
    Sha256,
    Sha1,
}

/// `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` (and `pbkdf2_sha1$...`).
fn pbkdf2(password: &str, rest: &str, prf: Prf) -> Result<bool, HashError> {
    let name = match prf {
        Prf::Sha256 => "pbkdf2_sha256",
        Prf::Sha1 => "pbkdf2_sha1",
    };
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HashError::Malformed(name));
    };
    let iterations: u32 = iterations.parse().map_err(|_| HashError::Malformed(name))?;
    let expected = STANDARD.decode(hash).map_err(|_| HashError::Malformed(name))?;
    if expected.is_empty() || expected.len() > 64 || iterations == 0 {
        return Err(HashError::Malformed(name));
    }
    let mut derived = vec![0u8; expected.len()];
    match prf {
        Prf::Sha256 => ::pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut derived),
        Prf::Sha1 => {
            ::pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), salt.as_bytes(), iterations, &mut derived)
        }
    }
    Ok(constant_time_eq(&derived, &expected))
}

/// `argon2$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`: the PHC string after `argon2`.
fn argon2(password: &str, rest: &str) -> Result<bool, HashError> {
    use ::argon2::password_hash::{PasswordHash, PasswordVerifier};
    let phc = format!("${rest}");
    let hash = PasswordHash::new(&phc).map_err(|_| HashError::Malformed("argon2"))?;
    if hash.hash.is_none() || !hash.algorithm.as_str().starts_with("argon2") {
        return Err(HashError::Malformed("argon2"));
    }
    Ok(::argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// `bcrypt_sha256$$2b$12$...`: bcrypt of the hex SHA-256 of the password.
fn bcrypt_sha256(password: &str, rest: &str) -> Result<bool, HashError> {
    let digest = Sha256::digest(password.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    ::bcrypt::verify(hex, rest).map_err(|_| HashError::Malformed("bcrypt_sha256"))
}

/// `scrypt$<n>$<salt>$<r>$<p>$<base64 hash>` (64 bytes).
fn scrypt(password: &str, rest: &str) -> Result<bool, HashError> {
    const NAME: &str = "scrypt";
    let parts: Vec<&str> = rest.split('$').collect();
    let [n, salt, r, p, hash] = parts.as_slice() else { return Err(HashError::Malformed(NAME)) };
    let parse = |value: &str| value.parse::<u32>().map_err(|_| HashError::Malformed(NAME));
    let (n, r, p) = (parse(n)?, parse(r)?, parse(p)?);
    if !n.is_power_of_two() || n < 2 {
        return Err(HashError::Malformed(NAME));
    }
    let expected = STANDARD.decode(hash).map_err(|_| HashError::Malformed(NAME))?;
    let params = ::scrypt::Params::new(n.trailing_zeros() as u8, r, p, expected.len())
        .map_err(|_| HashError::Malformed(NAME))?;
    let mut derived = vec![0u8; expected.len()];
    ::scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut derived)
        .map_err(|_| HashError::Malformed(NAME))?;
    Ok(constant_time_eq(&derived, &expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Django 5.2's hashers (with small work factors, so the test is quick).
    const DJANGO_HASHES: &[&str] = &[
        "pbkdf2_sha256$1000$somesalt$3UXLHR2dsBArfqHwukhrdUO9gJfc1BvmMq0GPd9sP6E=",
        "pbkdf2_sha1$1000$somesalt$RUPdysXOMBdPp5FrGMvEVztfS7c=",
        "argon2$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bIKRw3Ua1pluirFy81fnppmR01EnUxY3hLEBwbWxBG8",
        "bcrypt_sha256$$2b$04$fp602gO3rhtCtynpmEl8auYaR2kqkGNW2aEW1qhcVz0sXlyVwsgua",
        "scrypt$1024$somesalt$8$1$NATD5a63PUUWoTMSKKJeWX4dre3xh7/B8mDwvrxG5ErBa2P5yX3Trkqpy3ej10vgSW5uzTUBgTx3+6TfZ450Rw==",
    ];

    #[test]
    fn djangos_hashes_verify_and_only_with_the_right_password() {
        for hash in DJANGO_HASHES {
            assert_eq!(check_password("correct horse", hash), Ok(true), "{hash}");
            assert_eq!(check_password("correct horsf", hash), Ok(false), "{hash}");
        }
    }

    #[test]
    fn unusable_unknown_and_malformed_hashes() {
        assert_eq!(check_password("x", "!unusable"), Ok(false));
        assert_eq!(check_password("x", ""), Ok(false));
        assert!(matches!(check_password("x", "md5$salt$abc"), Err(HashError::Unsupported(name)) if name == "md5"));
        for malformed in [
            "pbkdf2_sha256$x$salt$abc",
            "pbkdf2_sha256$1000$salt",
            "scrypt$1000$s$8$1$AAAA",
            "argon2$nope",
            "bcrypt_sha256$$2b$nope",
        ] {
            assert!(matches!(check_password("x", malformed), Err(HashError::Malformed(_))), "{malformed}");
        }
    }
}
