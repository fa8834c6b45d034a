//! [`SecretKeys`]: HMAC-SHA256 signatures with key rotation.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A key is shorter than 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret keys must be at least 32 bytes long (got {0}); generate one with `openssl rand -base64 48`")]
pub struct WeakKeyError(pub usize);

/// Secret keys for signing cookies: the first signs, every key verifies, so a key can be
/// rotated by putting the new one first and dropping the old one once its cookies expired.
///
/// Verification is constant-time. `Debug` does not print the keys.
#[derive(Clone)]
pub struct SecretKeys {
    keys: Arc<[Vec<u8>]>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeys").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl SecretKeys {
    /// Keys, newest first, each at least 32 bytes.
    ///
    /// # Errors
    /// [`WeakKeyError`] for a short key; an empty list also fails (length 0).
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<Self, WeakKeyError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|key| key.as_ref().to_vec()).collect();
        if keys.is_empty() {
            return Err(WeakKeyError(0));
        }
        if let Some(short) = keys.iter().find(|key| key.len() < 32) {
            return Err(WeakKeyError(short.len()));
        }
        Ok(SecretKeys { keys: keys.into() })
    }

    /// A random key for development: cookies signed with it stop working when the process
    /// restarts. Logs a warning saying so.
    pub fn random() -> Self {
        tracing::warn!(
            "no secret key configured: using a random one, so sessions end when the process restarts; \
             configure SecretKeys for production"
        );
        SecretKeys { keys: vec![random_bytes::<32>().to_vec()].into() }
    }

    fn mac(key: &[u8], message: &str) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
        mac.update(b"channels.cookie-signature:");
        mac.update(message.as_bytes());
        mac
    }

    /// `message` signed with the first key (URL-safe base64).
    pub fn sign(&self, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(Self::mac(&self.keys[0], message).finalize().into_bytes())
    }

    /// True when `signature` is `message`'s signature under any of the keys.
    pub fn verify(&self, message: &str, signature: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else { return false };
        self.keys.iter().any(|key| Self::mac(key, message).verify_slice(&signature).is_ok())
    }
}

/// Random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing means the machine cannot produce secrets at all.
    getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("the OS random generator failed: {err}"));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_signs_every_key_verifies() {
        let old = SecretKeys::new([[1u8; 32]]).unwrap();
        let rotated = SecretKeys::new([[2u8; 32], [1u8; 32]]).unwrap();
        let signed_by_old = old.sign("hello");
        assert!(rotated.verify("hello", &signed_by_old));
        assert!(!rotated.verify("hellO", &signed_by_old));
        assert!(!old.verify("hello", &rotated.sign("hello")));
        assert!(!old.verify("hello", "not base64 !"));
        assert_eq!(SecretKeys::new([[0u8; 16]]).unwrap_err(), WeakKeyError(16));
        assert!(SecretKeys::new(Vec::<Vec<u8>>::new()).is_err());
    }
}
