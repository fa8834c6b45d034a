//! Django's `django.core.signing` and `django.utils.crypto.salted_hmac`, byte for byte: what its
//! session data, signed-cookie sessions and session auth hashes are made of.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// At most this many bytes come out of a compressed signed value (Django checks the signature
/// before it decompresses, so only data signed with the key is inflated; this bounds even that).
const MAX_INFLATED: u64 = 1 << 20;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a signed value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadSignature {
    /// No separator, or a signature that no key made.
    #[error("bad signature")]
    Invalid,
    /// Signed longer ago than the allowed age.
    #[error("signature expired")]
    Expired,
    /// Signed, but not base64 / zlib / JSON as Django writes them (another serializer, e.g.
    /// pickle, or data too large to inflate).
    #[error("signed value does not decode: {0}")]
    Undecodable(String),
}

/// Django's secret keys: `SECRET_KEY` signs, it and `SECRET_KEY_FALLBACKS` verify.
#[derive(Clone)]
pub struct DjangoKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for DjangoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoKeys").field("fallbacks", &(self.keys.len() - 1)).finish_non_exhaustive()
    }
}

impl DjangoKeys {
    /// `SECRET_KEY` and `SECRET_KEY_FALLBACKS`.
    pub fn new<S: AsRef<[u8]>>(secret_key: impl AsRef<[u8]>, fallbacks: impl IntoIterator<Item = S>) -> Self {
        let mut keys = vec![secret_key.as_ref().to_vec()];
        keys.extend(fallbacks.into_iter().map(|key| key.as_ref().to_vec()));
        DjangoKeys { keys }
    }

    /// `SECRET_KEY`.
    pub(crate) fn current(&self) -> &[u8] {
        &self.keys[0]
    }

    /// `SECRET_KEY_FALLBACKS`.
    pub(crate) fn fallbacks(&self) -> &[Vec<u8>] {
        &self.keys[1..]
    }

    /// Every key, the current one first.
    fn all(&self) -> &[Vec<u8>] {
        &self.keys
    }
}

/// `salted_hmac(key_salt, value, secret, algorithm="sha256")`.
pub(crate) fn salted_hmac(key_salt: &str, value: &[u8], secret: &[u8]) -> [u8; 32] {
    let key = Sha256::new().chain_update(key_salt.as_bytes()).chain_update(secret).finalize();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(value);
    mac.finalize().into_bytes().into()
}

/// Django's `constant_time_compare`.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn b62_encode(mut value: u64) -> String {
    if value == 0 {
        return "0".to_owned();
    }
    let mut digits = Vec::new();
    while value > 0 {
        digits.push(BASE62[(value % 62) as usize]);
        value /= 62;
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn b62_decode(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |acc, digit| {
        let index = BASE62.iter().position(|known| *known == digit)? as u64;
        acc.checked_mul(62)?.checked_add(index)
    })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// `Signer(salt=salt).signature(value, key)`.
fn signature(salt: &str, value: &str, key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(salted_hmac(&format!("{salt}signer"), value.as_bytes(), key))
}

/// `TimestampSigner(salt=salt).sign(value)` with `SECRET_KEY`.
pub(crate) fn sign(keys: &DjangoKeys, salt: &str, value: &str) -> String {
    let stamped = format!("{value}:{}", b62_encode(unix_now()));
    let signature = signature(salt, &stamped, keys.current());
    format!("{stamped}:{signature}")
}

/// `TimestampSigner(salt=salt).unsign(signed, max_age)`: the value, if a key signed it and it is
/// not older than `max_age` seconds.
pub(crate) fn unsign(
    keys: &DjangoKeys,
    salt: &str,
    signed: &str,
    max_age: Option<u64>,
) -> Result<String, BadSignature> {
    let (stamped, given) = signed.rsplit_once(':').ok_or(BadSignature::Invalid)?;
    let valid =
        keys.all().iter().any(|key| constant_time_eq(given.as_bytes(), signature(salt, stamped, key).as_bytes()));
    if !valid {
        return Err(BadSignature::Invalid);
    }
    let (value, timestamp) = stamped.rsplit_once(':').ok_or(BadSignature::Invalid)?;
    let timestamp = b62_decode(timestamp).ok_or(BadSignature::Invalid)?;
    if max_age.is_some_and(|max_age| unix_now().saturating_sub(timestamp) > max_age) {
        return Err(BadSignature::Expired);
    }
    Ok(value.to_owned())
}

/// `signing.dumps(value, salt=salt, compress=True)` with Django's `JSONSerializer`.
pub(crate) fn dumps<T: Serialize + ?Sized>(
    keys: &DjangoKeys,
    salt: &str,
    value: &T,
) -> Result<String, serde_json::Error> {
    let data = serde_json::to_vec(value)?;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = std::io::Write::write_all(&mut encoder, &data).and_then(|()| encoder.finish()).ok();
    let encoded = match compressed {
        Some(compressed) if compressed.len() + 1 < data.len() => format!(".{}", URL_SAFE_NO_PAD.encode(compressed)),
        _ => URL_SAFE_NO_PAD.encode(&data),
    };
    Ok(sign(keys, salt, &encoded))
}

/// `signing.loads(signed, salt=salt, max_age=max_age)` with Django's `JSONSerializer`.
pub(crate) fn loads<T: DeserializeOwned>(
    keys: &DjangoKeys,
    salt: &str,
    signed: &str,
    max_age: Option<u64>,
) -> Result<T, BadSignature> {
    let value = unsign(keys, salt, signed, max_age)?;
    let (compressed, encoded) = match value.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, value.as_str()),
    };
    let undecodable = |what: &str| BadSignature::Undecodable(what.to_owned());
    // Django's b64_decode pads and accepts the URL-safe alphabet.
    let padded = format!("{encoded}{}", "=".repeat((4 - encoded.len() % 4) % 4));
    let mut data = URL_SAFE.decode(padded).map_err(|_| undecodable("not base64"))?;
    if compressed {
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(data.as_slice())
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut inflated)
            .map_err(|_| undecodable("not zlib"))?;
        if inflated.len() as u64 > MAX_INFLATED {
            return Err(undecodable("larger than 1 MiB inflated"));
        }
        data = inflated;
    }
    serde_json::from_slice(&data)
        .map_err(|err| BadSignature::Undecodable(format!("not JSON ({err}); another SESSION_SERIALIZER?")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> DjangoKeys {
        DjangoKeys::new("django-insecure-test-key", ["an-older-key"])
    }

    #[test]
    fn base62_round_trips() {
        for value in [0, 1, 61, 62, 1_700_000_000, u64::from(u32::MAX)] {
            assert_eq!(b62_decode(&b62_encode(value)), Some(value));
        }
        assert_eq!(b62_encode(1_700_000_000), "1r31eq", "as Django's b62_encode");
        assert_eq!(b62_decode("!"), None);
    }

    #[test]
    fn salted_hmac_is_djangos() {
        // `salted_hmac(salt, "pbkdf2_sha256$x", "django-insecure-test-key", algorithm="sha256")`,
        // computed by Django 5.2.
        let mac = salted_hmac(
            "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
            b"pbkdf2_sha256$x",
            b"django-insecure-test-key",
        );
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, "f3e4adc4d488a2c81ca5c9f3b9e04b8327b0fc4ef05ea3b56ac2c6d7735dcf8b");
    }

    #[test]
    fn dumps_and_loads_round_trip_compressed_or_not() {
        let small = serde_json::json!({"a": 1});
        let big = serde_json::json!({"text": "x".repeat(500)});
        for value in [small, big] {
            let signed = dumps(&keys(), "salt", &value).unwrap();
            assert_eq!(loads::<serde_json::Value>(&keys(), "salt", &signed, None).unwrap(), value);
            assert_eq!(loads::<serde_json::Value>(&keys(), "other", &signed, None), Err(BadSignature::Invalid));
        }
        let signed = dumps(&keys(), "salt", &serde_json::json!({"text": "x".repeat(500)})).unwrap();
        assert!(signed.starts_with('.'), "compressed: {signed}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_signed_values_never_panic(value in ".{0,300}") {
            let _ = loads::<serde_json::Value>(&keys(), "salt", &value, Some(10));
        }
    }

    #[test]
    fn fallback_keys_verify_and_tampering_fails() {
        let old = DjangoKeys::new("an-older-key", [] as [&str; 0]);
        let signed = sign(&old, "salt", "hello");
        assert_eq!(unsign(&keys(), "salt", &signed, None).unwrap(), "hello");
        let tampered = signed.replacen("hello", "hellp", 1);
        assert_eq!(unsign(&keys(), "salt", &tampered, None), Err(BadSignature::Invalid));
        assert_eq!(unsign(&keys(), "salt", "no-separator", None), Err(BadSignature::Invalid));
        let stale = format!("hello:{}", b62_encode(unix_now() - 100));
        let stale = format!("{stale}:{}", signature("salt", &stale, keys().current()));
        assert_eq!(unsign(&keys(), "salt", &stale, Some(10)), Err(BadSignature::Expired));
        assert_eq!(unsign(&keys(), "salt", &stale, Some(1000)).unwrap(), "hello");
    }
}
