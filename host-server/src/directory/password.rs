//! Password hashes: argon2id in the PHC string format
//! (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`).
//!
//! The string carries its own parameters, so a hash made under older
//! [`PasswordParams`] still verifies after the operator changes them; new
//! hashes (`user add`, `user passwd`) take the new ones. Passwords are
//! never logged and never put in an error: the errors here say only what
//! failed.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::DirectoryError;

/// argon2id's cost: memory and passes (one lane: the relay verifies many
/// logins at once on its blocking pool, so lanes would only contend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordParams {
    /// Memory per hash, in KiB (at least 8).
    pub memory_kib: u32,
    /// Passes over that memory (at least 1).
    pub iterations: u32,
}

impl PasswordParams {
    /// OWASP's minimum for argon2id: 19 MiB, 2 passes (tens of
    /// milliseconds per login on a current core).
    pub const DEFAULT: PasswordParams = PasswordParams {
        memory_kib: 19_456,
        iterations: 2,
    };

    /// The cheapest argon2 allows, so that tests and the simulator add
    /// and check passwords in microseconds. Never for a real relay: a
    /// stolen database would give such hashes up at once.
    #[cfg(any(test, feature = "test-support"))]
    pub const FAST_FOR_TESTS: PasswordParams = PasswordParams {
        memory_kib: 8,
        iterations: 1,
    };

    /// Checks that argon2 accepts these parameters.
    pub fn validate(&self) -> Result<(), String> {
        self.argon2().map(|_| ())
    }

    /// The hasher, or why these parameters are out of argon2's range.
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| format!("password parameters: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams::DEFAULT
    }
}

/// Hashes `password` under `params` with a fresh 16-byte salt from the OS.
pub fn hash(password: &str, params: PasswordParams) -> Result<String, DirectoryError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| DirectoryError::Storage(format!("no random salt: {e}")))?;
    hash_with_salt(password, &salt, params)
}

fn hash_with_salt(
    password: &str,
    salt: &[u8],
    params: PasswordParams,
) -> Result<String, DirectoryError> {
    let salt = SaltString::encode_b64(salt)
        .map_err(|e| DirectoryError::Storage(format!("password salt: {e}")))?;
    let argon2 = params.argon2().map_err(DirectoryError::Storage)?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DirectoryError::Storage(format!("password hash: {e}")))
}

/// Whether `password` matches the PHC string `stored`. A string that does
/// not parse is an error (a damaged row), not a wrong password.
pub fn verify(password: &str, stored: &str) -> Result<bool, DirectoryError> {
    let parsed = PasswordHash::new(stored)
        .map_err(|e| DirectoryError::Storage(format!("stored password hash: {e}")))?;
    // The parameters come from the string; `Argon2::default()` only
    // supplies an algorithm the string overrides.
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(DirectoryError::Storage(format!("password check: {e}"))),
    }
}

/// A hash of no one's password, made under the directory's
/// [`PasswordParams`] when it opens: an unknown user's login is verified
/// against it, so that it costs what a known user's costs and its timing
/// does not tell whether the user exists. (Made at once, not at the first
/// unknown login, which would otherwise take twice as long.)
#[derive(Debug)]
pub(super) struct DummyHash(String);

impl DummyHash {
    /// The dummy hash under `params`.
    pub(super) fn new(params: PasswordParams) -> Self {
        // A fixed salt is fine: nothing is protected by this hash. Empty
        // if argon2 refuses `params` (the SQLite directory refuses them
        // first): then an unknown user's check is quick, and still false.
        DummyHash(
            hash_with_salt("pickup dummy password", b"pickup-dummy-salt", params)
                .unwrap_or_default(),
        )
    }

    /// Verifies `password` against the dummy hash (the answer is always
    /// `false`; the work is the point).
    pub(super) fn verify(&self, password: &str) -> bool {
        // black_box: the result is thrown away, and the compiler must not
        // throw the work away with it.
        let _ = std::hint::black_box(verify(password, &self.0));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_carry_their_parameters_and_differ_by_salt() {
        let p = PasswordParams::FAST_FOR_TESTS;
        let a = hash("hunter2", p).unwrap();
        let b = hash("hunter2", p).unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{a}");
        assert!(verify("hunter2", &a).unwrap());
        assert!(!verify("hunter3", &a).unwrap());
        assert!(!a.contains("hunter2"));
        assert!(verify("x", "not a hash").is_err());
        assert!(PasswordParams {
            memory_kib: 1,
            iterations: 1
        }
        .validate()
        .is_err());
        assert!(!DummyHash::new(p).verify("pickup dummy password"));
    }

    /// An unknown user's check costs what a wrong password's does because
    /// the dummy hash is made under the same algorithm, version and cost
    /// parameters as every stored hash: argon2's work depends on nothing
    /// else. (Checked on the strings, not with a stopwatch.)
    #[test]
    fn the_dummy_hash_costs_what_a_stored_hash_costs() {
        for params in [PasswordParams::DEFAULT, PasswordParams::FAST_FOR_TESTS] {
            let dummy = DummyHash::new(params);
            let stored = hash("hunter2", params).unwrap();
            let (dummy, stored) = (
                PasswordHash::new(&dummy.0).unwrap(),
                PasswordHash::new(&stored).unwrap(),
            );
            assert_eq!(dummy.algorithm, stored.algorithm);
            assert_eq!(dummy.version, stored.version);
            assert_eq!(dummy.params, stored.params);
            assert_eq!(
                dummy.hash.map(|h| h.len()),
                stored.hash.map(|h| h.len()),
                "the same output length"
            );
        }
    }
}
