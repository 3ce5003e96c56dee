//! Secrets at rest (channel and automation secrets, webhook signing secrets): sealed with
//! ChaCha20-Poly1305 under a key kept outside the database, so a copy of the database (a
//! backup, a read-only SQL account, a leaked dump) does not give away the credentials of every
//! workspace's mail server, messenger bot and webhook receiver.
//!
//! The key is `PLUGDESK_SECRET_KEY` (32 bytes as base64 or 64 hex digits) or else the file
//! `secret.key` in the data directory, created with mode 0600 on first start. Stored form:
//! `enc:v1:<key id>:<base64 of nonce and ciphertext>`. Other `secret.key.*` files (backups
//! left by [`rotate`]) still decrypt older values. Text without the prefix is a plaintext row
//! from before encryption and reads as it is; [`seal_plaintext`] encrypts those at start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sea_orm::{ConnectionTrait, TransactionTrait};
use sha2::{Digest, Sha256};

use crate::db;
use crate::error::{Error, Result};

/// Prefix of a sealed value.
const PREFIX: &str = "enc:v1:";
/// The key file in the data directory.
const KEY_FILE: &str = "secret.key";
/// The environment variable that holds the key instead of the file (several nodes on one
/// PostgreSQL need the same key).
pub const KEY_ENV: &str = "PLUGDESK_SECRET_KEY";
/// Binds every ciphertext to its purpose, so no other ChaCha20 output under this key passes.
const AAD: &[u8] = b"plugdesk secret v1";

/// The columns that hold secrets: table, key column, secret column.
const COLUMNS: [(&str, &str); 3] = [("channels", "secrets"), ("automations", "secrets"), ("webhooks", "secret")];

/// One key and its id (the first 8 hex digits of its SHA-256: names the key, reveals nothing).
struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Result<Self> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| Error::Config("the secret key must be 32 bytes".into()))?;
        let id = hex::encode(Sha256::digest(bytes))[..8].to_owned();
        Ok(Key { id, key: LessSafeKey::new(unbound) })
    }

    fn seal(&self, plain: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .map_err(|_| Error::Internal("cannot encrypt a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}:{}", self.id, B64.encode(out)))
    }

    fn open(&self, sealed: &[u8]) -> Result<String> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Internal("a stored secret is truncated".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Internal("a stored secret is truncated".into()))?;
        let mut data = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(AAD), &mut data).map_err(|_| {
            Error::Internal(format!("a stored secret does not decrypt with key {}; it was altered", self.id))
        })?;
        String::from_utf8(plain.to_vec()).map_err(|_| Error::Internal("a stored secret is not text".into()))
    }
}

/// The key new secrets are sealed with, and older keys that still open what they sealed.
pub struct Keyring {
    current: Key,
    older: Vec<Key>,
    /// Where the keys came from (reloaded when a value names a key we do not hold yet).
    dir: PathBuf,
}

impl Keyring {
    /// Loads the key from `PLUGDESK_SECRET_KEY` or `dir/secret.key` (creating that file, mode
    /// 0600, when neither exists), plus every `dir/secret.key.*` backup.
    ///
    /// # Errors
    /// [`Error::Config`] when the key is malformed or the file cannot be read or created.
    pub fn load(dir: &Path) -> Result<Self> {
        let current = match std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty()) {
            Some(v) => Key::new(
                &parse_key(&v)
                    .ok_or_else(|| Error::Config(format!("{KEY_ENV} must be 32 bytes as base64 or 64 hex digits")))?,
            )?,
            None => Key::new(&read_or_create(&dir.join(KEY_FILE))?)?,
        };
        let mut older = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{KEY_FILE}.")) {
                    let text = std::fs::read_to_string(e.path())
                        .map_err(|err| Error::Config(format!("cannot read {}: {err}", e.path().display())))?;
                    let bytes = parse_key(&text).ok_or_else(|| {
                        Error::Config(format!("{} is not a key (32 bytes as base64)", e.path().display()))
                    })?;
                    let k = Key::new(&bytes)?;
                    if k.id != current.id {
                        older.push(k);
                    }
                }
            }
        }
        Ok(Keyring { current, older, dir: dir.to_owned() })
    }

    /// The id of the key new secrets are sealed with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` with the current key.
    ///
    /// # Errors
    /// Only if the cipher fails (never in practice).
    pub fn seal(&self, plain: &str) -> Result<String> {
        self.current.seal(plain)
    }

    /// Opens a stored value; a value without the `enc:v1:` prefix is old plaintext and is
    /// returned as it is.
    ///
    /// # Errors
    /// [`Error::Internal`] when the value names a key we do not hold or does not decrypt.
    pub fn open(&self, stored: &str) -> Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (id, data) = rest.split_once(':').ok_or_else(|| Error::Internal("a stored secret is malformed".into()))?;
        let key = std::iter::once(&self.current).chain(&self.older).find(|k| k.id == id).ok_or_else(|| {
            Error::Internal(format!(
                "a stored secret was sealed with key {id}, which is neither {KEY_ENV} nor a secret.key file in {}; restore that key",
                self.dir.display()
            ))
        })?;
        let sealed = B64.decode(data).map_err(|_| Error::Internal("a stored secret is malformed".into()))?;
        key.open(&sealed)
    }

    fn knows(&self, stored: &str) -> bool {
        match stored.strip_prefix(PREFIX).and_then(|r| r.split_once(':')) {
            Some((id, _)) => std::iter::once(&self.current).chain(&self.older).any(|k| k.id == id),
            None => true,
        }
    }
}

/// 32 key bytes from base64 or hex text.
fn parse_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 { hex::decode(t).ok()? } else { B64.decode(t).ok()? };
    bytes.try_into().ok()
}

/// A fresh random key.
fn new_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

fn read_or_create(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(&text)
            .ok_or_else(|| Error::Config(format!("{} is not a key (32 bytes as base64)", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
            }
            let key = new_key();
            match write_key(path, &key) {
                Ok(()) => Ok(key),
                // Another process (a second node on the same directory) created it first.
                Err(_) if path.exists() => read_or_create(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(Error::Config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes a new key file, readable by its owner only; never overwrites.
fn write_key(path: &Path, key: &[u8; 32]) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::Config(format!("cannot create {}: {e}", path.display())))?;
    writeln!(f, "{}", B64.encode(key))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}

/// The keyring of this process, set by [`install`]. A process-wide value because secrets are
/// read and written deep inside channel, automation and webhook code, by the server and the
/// commands alike, and the key is a property of the installation, not of a request.
static ACTIVE: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

/// Loads the keyring for `dir` and makes it the process's.
///
/// # Errors
/// As [`Keyring::load`].
pub fn install(dir: &Path) -> Result<()> {
    let ring = Arc::new(Keyring::load(dir)?);
    *ACTIVE.write().map_err(|_| Error::Internal("secret keyring poisoned".into()))? = Some(ring);
    Ok(())
}

fn active() -> Result<Arc<Keyring>> {
    ACTIVE
        .read()
        .map_err(|_| Error::Internal("secret keyring poisoned".into()))?
        .clone()
        .ok_or_else(|| Error::Internal("the secret key is not loaded (secret::install was not called)".into()))
}

/// Seals a secret with the process's key, for storing.
///
/// # Errors
/// When no key is loaded.
pub fn seal(plain: &str) -> Result<String> {
    active()?.seal(plain)
}

/// Opens a stored secret (plaintext from before encryption passes through). A value sealed
/// by a key this process does not hold yet (rotated by another process) reloads the key files
/// once.
///
/// # Errors
/// When the key is missing or the value was altered.
pub fn open(stored: &str) -> Result<String> {
    let ring = active()?;
    if !ring.knows(stored) {
        install(&ring.dir)?;
        return active()?.open(stored);
    }
    ring.open(stored)
}

/// Encrypts the secrets still stored as plaintext (rows from before encryption). Each row is
/// updated only if it is still the plaintext read, so nodes starting together do not seal twice.
///
/// # Errors
/// Database errors.
pub async fn seal_plaintext<C: ConnectionTrait>(db: &C) -> Result<u64> {
    let ring = active()?;
    let mut n = 0;
    for (table, column) in COLUMNS {
        let rows = db::query_all(
            db,
            &format!(
                "SELECT id, {column} AS v FROM {table} WHERE {column} IS NOT NULL AND {column} NOT LIKE 'enc:v1:%'"
            ),
            vec![],
        )
        .await?;
        for r in rows {
            let (id, v): (i64, String) = (db::col(&r, "id")?, db::col(&r, "v")?);
            n += db::exec(
                db,
                &format!("UPDATE {table} SET {column} = ? WHERE id = ? AND {column} = ?"),
                vec![ring.seal(&v)?.into(), id.into(), v.into()],
            )
            .await?;
        }
    }
    Ok(n)
}

/// `plugdesk secrets rotate`: makes a new key, re-seals every secret with it in one
/// transaction, and keeps the old key as `secret.key.<old id>.bak`. Returns the new key's id
/// and the number of secrets re-sealed.
///
/// The new key is written (as `secret.key.new`) before the transaction commits and every
/// `secret.key.*` file opens secrets, so a crash at any point leaves every secret readable.
///
/// # Errors
/// When the key comes from `PLUGDESK_SECRET_KEY` (the operator rotates that), a secret does
/// not open, or the database or the files fail.
pub async fn rotate(db: &sea_orm::DatabaseConnection, dir: &Path) -> Result<(String, u64)> {
    if std::env::var(KEY_ENV).is_ok_and(|v| !v.trim().is_empty()) {
        return Err(Error::Config(format!(
            "the key comes from {KEY_ENV}; rotate by unsetting it and restoring a secret.key file, or change it yourself and re-run with the old one as secret.key.old in {}",
            dir.display()
        )));
    }
    let old = Keyring::load(dir)?;
    let fresh = new_key();
    let staged = dir.join(format!("{KEY_FILE}.new"));
    let _ = std::fs::remove_file(&staged);
    write_key(&staged, &fresh)?;
    let new = Key::new(&fresh)?;
    let txn = db.begin().await?;
    let mut n = 0;
    for (table, column) in COLUMNS {
        let rows =
            db::query_all(&txn, &format!("SELECT id, {column} AS v FROM {table} WHERE {column} IS NOT NULL"), vec![])
                .await?;
        for r in rows {
            let (id, v): (i64, String) = (db::col(&r, "id")?, db::col(&r, "v")?);
            let plain = old.open(&v)?;
            db::exec(
                &txn,
                &format!("UPDATE {table} SET {column} = ? WHERE id = ?"),
                vec![new.seal(&plain)?.into(), id.into()],
            )
            .await?;
            n += 1;
        }
    }
    txn.commit().await?;
    let current = dir.join(KEY_FILE);
    let backup = dir.join(format!("{KEY_FILE}.{}.bak", old.current.id));
    std::fs::rename(&current, &backup).and_then(|()| std::fs::rename(&staged, &current)).map_err(|e| {
        Error::Config(format!(
            "secrets are re-sealed but the key files could not be renamed: {e}; rename {} to {}",
            staged.display(),
            current.display()
        ))
    })?;
    install(dir)?;
    Ok((new.id, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plugdesk-secret-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn sealed_secrets_open_again_and_hide_the_plaintext() {
        let dir = scratch("roundtrip");
        let Ok(ring) = Keyring::load(&dir) else { panic!("load") };
        let sealed = ring.seal("{\"token\":\"s3cret\"}").unwrap_or_default();
        assert!(sealed.starts_with(&format!("enc:v1:{}:", ring.key_id())), "{sealed}");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(ring.seal("x").ok(), ring.seal("x").ok(), "a fresh nonce each time");
        assert_eq!(ring.open(&sealed).ok().as_deref(), Some("{\"token\":\"s3cret\"}"));
        assert_eq!(ring.open("plain old").ok().as_deref(), Some("plain old"), "rows from before encryption");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_key_file_is_created_once_owner_only_and_reused() {
        let dir = scratch("file");
        let a = Keyring::load(&dir).map(|r| r.key_id().to_owned()).ok();
        let b = Keyring::load(&dir).map(|r| r.key_id().to_owned()).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(KEY_FILE)).map(|m| m.permissions().mode() & 0o777).ok();
            assert_eq!(mode, Some(0o600));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn altered_values_and_unknown_keys_are_errors() {
        let dir = scratch("tamper");
        let Ok(ring) = Keyring::load(&dir) else { panic!("load") };
        let sealed = ring.seal("secret").unwrap_or_default();
        let mut bytes = B64.decode(sealed.rsplit(':').next().unwrap_or_default()).unwrap_or_default();
        if let Some(b) = bytes.last_mut() {
            *b ^= 1;
        }
        let tampered = format!("{PREFIX}{}:{}", ring.key_id(), B64.encode(&bytes));
        assert!(ring.open(&tampered).is_err());
        let foreign = format!("{PREFIX}deadbeef:{}", B64.encode(&bytes));
        let err = ring.open(&foreign).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("deadbeef") && err.contains("restore"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn backup_key_files_still_open_what_they_sealed() {
        let dir = scratch("backup");
        let Ok(first) = Keyring::load(&dir) else { panic!("load") };
        let sealed = first.seal("old secret").unwrap_or_default();
        std::fs::rename(dir.join(KEY_FILE), dir.join(format!("{KEY_FILE}.{}.bak", first.key_id()))).ok();
        let Ok(second) = Keyring::load(&dir) else { panic!("reload") };
        assert_ne!(second.key_id(), first.key_id());
        assert_eq!(second.open(&sealed).ok().as_deref(), Some("old secret"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn keys_parse_from_base64_or_hex() {
        let k = [7u8; 32];
        assert_eq!(parse_key(&B64.encode(k)), Some(k));
        assert_eq!(parse_key(&format!("{}\n", hex::encode(k))), Some(k));
        assert_eq!(parse_key("short"), None);
    }
}
