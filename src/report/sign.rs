//! Key material and signatures for consentry's audit reports.
//!
//! This module is the only place in consentry that generates, writes or
//! reads keys. It owns three files in a key directory: the Ed25519 signing
//! key (`signing.key`, PKCS#8 PEM, mode 0600), its public half
//! (`signing.pub`, SubjectPublicKeyInfo PEM, mode 0644) and the pseudonym key
//! (`pseudonym.key`, 32 raw random bytes, mode 0600). It also owns the two
//! operations built on them: turning a subject id into a stable pseudonym
//! (HMAC-SHA256), and wrapping a report in a signed
//! [DSSE](https://github.com/secure-systems-lab/dsse) envelope and checking
//! one. Secret key files are refused when they are symbolic links, not
//! regular files, or readable by group or others, and no error message or
//! `Debug` output ever contains secret bytes.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the Ed25519 private key inside a key directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// File name of the Ed25519 public key inside a key directory.
pub const PUBLIC_KEY_FILE: &str = "signing.pub";
/// File name of the pseudonym (HMAC) key inside a key directory.
pub const PSEUDONYM_KEY_FILE: &str = "pseudonym.key";

/// The DSSE payload type of every envelope consentry signs or accepts.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Length in bytes of the pseudonym key.
const PSEUDONYM_KEY_LEN: usize = 32;

/// What a pseudonym key file must contain, as said in error messages.
const PSEUDONYM_KEY_FORMAT: &str =
    "a pseudonym key: exactly 32 raw bytes, or 64 hex digits optionally followed by a newline";

/// Key files are tiny; anything larger than this is not a key and is not read
/// into memory in full.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Longest excerpt of untrusted envelope text quoted in an error message.
const MAX_QUOTED_CHARS: usize = 80;

type HmacSha256 = Hmac<Sha256>;

/// Errors from generating or loading key files.
///
/// Every message starts in lowercase, names the file (or directory)
/// concerned, except [`KeyError::MalformedPem`] whose input is text rather
/// than a file, and never contains key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being attempted, e.g. "cannot read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `keygen` found a key file already present and wrote nothing.
    #[error("refusing to overwrite {}: it already exists; move the old keys away or choose another directory", .path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A secret key path is a symbolic link.
    #[error("refusing to load {}: it is a symbolic link; point at the key file itself", .path.display())]
    Symlink {
        /// The symbolic link.
        path: PathBuf,
    },
    /// A key path is a directory, device, FIFO or socket.
    #[error("refusing to load {}: it is not a regular file", .path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },
    /// A secret key file can be accessed by group or others.
    #[error(
        "refusing to load {}: its mode is {:04o}, which lets group or others access it; fix it with `chmod 600 {}`",
        .path.display(), .mode, shell_quote(.path)
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// The file at a path changed between inspecting it and opening it.
    #[error("refusing to load {}: it was replaced while being opened", .path.display())]
    Replaced {
        /// The key file.
        path: PathBuf,
    },
    /// A key file is larger than any key could be.
    #[error("refusing to load {}: it is larger than {limit} bytes, so it is not a key file", .path.display())]
    TooLarge {
        /// The key file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: u64,
    },
    /// A key file's contents are not a key of the expected kind.
    #[error("cannot load {}: it is not {expected} ({reason})", .path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the file should contain.
        expected: &'static str,
        /// Why it was rejected; never contains file contents.
        reason: String,
    },
    /// PEM text handed to [`Verifier::from_pem`] is not a public key.
    #[error("the given text is not an Ed25519 public key in SPKI PEM form ({reason})")]
    MalformedPem {
        /// Why it was rejected.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate keys for {}: the operating system random number generator failed: {reason}", .dir.display())]
    Rng {
        /// The key directory.
        dir: PathBuf,
        /// The generator's error.
        reason: String,
    },
    /// A key could not be serialised (not expected for Ed25519).
    #[error("cannot encode the key for {}: {reason}", .path.display())]
    Encode {
        /// The file the encoding was for.
        path: PathBuf,
        /// The encoder's error.
        reason: String,
    },
}

impl KeyError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        KeyError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reasons a DSSE envelope is rejected by [`verify_envelope`].
///
/// Messages are plain sentences meant for an auditor. Text taken from the
/// envelope is quoted with escapes and cut to a short excerpt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The input is not JSON at all.
    #[error("the envelope is not valid JSON ({0})")]
    NotJson(String),
    /// The input is JSON but lacks the fields of a DSSE envelope.
    #[error("the input is JSON but not a DSSE envelope ({0})")]
    NotEnvelope(String),
    /// The envelope declares a payload type other than [`PAYLOAD_TYPE`].
    #[error("the envelope's payload type is {found:?}, but consentry audit reports use {PAYLOAD_TYPE:?}")]
    WrongPayloadType {
        /// The declared type (an excerpt, escaped).
        found: String,
    },
    /// The payload or a signature is not base64.
    #[error("the envelope's {field} is not valid base64 ({reason})")]
    BadBase64 {
        /// `payload` or `signatures[i].sig`.
        field: String,
        /// The decoder's error.
        reason: String,
    },
    /// No signature carries the verifier's key id.
    #[error("the envelope has no signature from key {key_id} (it carries {count} signature(s), none with that key id)")]
    NoSignatureForKey {
        /// The verifier's key id.
        key_id: String,
        /// How many signatures the envelope carries.
        count: usize,
    },
    /// A signature with the right key id has the wrong length.
    #[error("signatures[{index}] names key {key_id} but is {len} bytes long, not a 64-byte Ed25519 signature")]
    SignatureMalformed {
        /// Position in the `signatures` array.
        index: usize,
        /// The verifier's key id.
        key_id: String,
        /// The decoded length.
        len: usize,
    },
    /// A signature with the right key id does not verify.
    #[error("the signature from key {key_id} does not match: the report or its signature was altered after signing, or it was signed by a different key")]
    SignatureInvalid {
        /// The verifier's key id.
        key_id: String,
    },
}

/// Identifies a signing key: the lowercase hex SHA-256 of the public key's
/// SubjectPublicKeyInfo DER encoding (64 characters).
///
/// The same value is
/// `openssl pkey -pubin -in signing.pub -outform DER | sha256sum`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The key id of a public key given as SPKI DER bytes.
    pub fn from_spki_der(der: &[u8]) -> KeyId {
        KeyId(hex::encode(Sha256::digest(der)))
    }

    /// The key id as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The public half of a key in the forms this module hands out.
struct PublicParts {
    key_id: KeyId,
    pem: String,
}

impl PublicParts {
    /// Encodes `key`; `path` is only used to name the file in an error.
    fn of(key: &VerifyingKey, path: &Path) -> Result<PublicParts, KeyError> {
        let encode_err = |e: ed25519_dalek::pkcs8::spki::Error| KeyError::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let der = key.to_public_key_der().map_err(encode_err)?;
        let pem = key.to_public_key_pem(LineEnding::LF).map_err(encode_err)?;
        Ok(PublicParts {
            key_id: KeyId::from_spki_der(der.as_bytes()),
            pem,
        })
    }
}

/// Generates a new key set in `dir` and returns the signing key's id.
///
/// Creates `dir` and any missing parents (mode 0755 less the umask), then writes `signing.key`
/// (PKCS#8 PEM, mode 0600), `signing.pub` (SPKI PEM, mode 0644) and
/// `pseudonym.key` (32 raw bytes, mode 0600), all from the operating
/// system's random number generator. Each file is created with
/// `create_new` and its final mode, then fsynced, and the directory is
/// fsynced last.
///
/// If any of the three files already exists (even as a dangling symlink),
/// returns [`KeyError::AlreadyExists`] naming it and writes nothing. If
/// writing fails part way, the files this call created are removed.
pub fn keygen(dir: &Path) -> Result<KeyId, KeyError> {
    let signing_path = dir.join(SIGNING_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    let pseudonym_path = dir.join(PSEUDONYM_KEY_FILE);

    for path in [&signing_path, &public_path, &pseudonym_path] {
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(KeyError::AlreadyExists { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::io("cannot inspect", path, e)),
        }
    }

    // Produce all key material before touching the disk.
    let rng_err = |e: getrandom::Error| KeyError::Rng {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(rng_err)?;
    let signing_key = SigningKey::from_bytes(&seed);
    wipe(&mut seed);
    let mut pseudonym_key = [0u8; PSEUDONYM_KEY_LEN];
    getrandom::fill(&mut pseudonym_key).map_err(rng_err)?;

    let public = PublicParts::of(&signing_key.verifying_key(), &public_path)?;
    // PKCS#8 v1 (no embedded public key), as `openssl genpkey` writes it:
    // OpenSSL before 3.5 and Python's `cryptography` cannot read the v2 form
    // that `SigningKey::to_pkcs8_pem` produces.
    let mut keypair = KeypairBytes {
        secret_key: signing_key.to_bytes(),
        public_key: None,
    };
    let private_pem = keypair.to_pkcs8_pem(LineEnding::LF);
    wipe(&mut keypair.secret_key);
    let private_pem = private_pem.map_err(|e| KeyError::Encode {
        path: signing_path.clone(),
        reason: e.to_string(),
    })?;

    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| KeyError::io("cannot create directory", dir, e))?;

    let files: [(&Path, &[u8], u32); 3] = [
        (&signing_path, private_pem.as_bytes(), 0o600),
        (&public_path, public.pem.as_bytes(), 0o644),
        (&pseudonym_path, &pseudonym_key, 0o600),
    ];
    let mut created: Vec<&Path> = Vec::new();
    let written = write_all_new(&files, &mut created).and_then(|()| sync_dir(dir));
    wipe(&mut pseudonym_key);
    if let Err(e) = written {
        for path in created {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(public.key_id)
}

/// Writes each `(path, contents, mode)` as a new file, recording in
/// `created` every file this call created.
fn write_all_new<'a>(
    files: &[(&'a Path, &[u8], u32)],
    created: &mut Vec<&'a Path>,
) -> Result<(), KeyError> {
    for &(path, contents, mode) in files {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    KeyError::io("cannot create", path, e)
                }
            })?;
        created.push(path);
        // The umask may have cleared bits of `mode`; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| KeyError::io("cannot set permissions on", path, e))?;
        file.write_all(contents)
            .map_err(|e| KeyError::io("cannot write", path, e))?;
        file.sync_all()
            .map_err(|e| KeyError::io("cannot fsync", path, e))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io("cannot fsync directory", dir, e))
}

/// Reads a secret key file after checking that `path` is not a symlink, is a
/// regular file and has no group/other permission bits. The checks are
/// repeated on the opened file, so a file swapped in between is refused.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let before = fs::symlink_metadata(path).map_err(|e| KeyError::io("cannot inspect", path, e))?;
    if before.file_type().is_symlink() {
        return Err(KeyError::Symlink {
            path: path.to_path_buf(),
        });
    }
    check_secret_metadata(path, &before)?;
    let file = File::open(path).map_err(|e| KeyError::io("cannot open", path, e))?;
    let opened = file
        .metadata()
        .map_err(|e| KeyError::io("cannot inspect", path, e))?;
    if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) {
        return Err(KeyError::Replaced {
            path: path.to_path_buf(),
        });
    }
    check_secret_metadata(path, &opened)?;
    read_capped(file, path)
}

fn check_secret_metadata(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    if !meta.file_type().is_file() {
        return Err(KeyError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a public (non-secret) file; only requires a regular file.
fn read_public_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let meta = fs::metadata(path).map_err(|e| KeyError::io("cannot inspect", path, e))?;
    if !meta.file_type().is_file() {
        return Err(KeyError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| KeyError::io("cannot open", path, e))?;
    read_capped(file, path)
}

fn read_capped(file: File, path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut buf = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| KeyError::io("cannot read", path, e))?;
    if buf.len() as u64 > MAX_KEY_FILE_BYTES {
        wipe(&mut buf);
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_KEY_FILE_BYTES,
        });
    }
    Ok(buf)
}

/// Explains why `text` did not parse as a PEM block labelled `label`: says
/// so plainly when the block is missing or is of another kind, and falls
/// back to the parser's `detail` (which never quotes the input) otherwise.
fn pem_problem(text: &str, label: &str, detail: &str) -> String {
    let begin = format!("-----BEGIN {label}-----");
    if text.contains(&begin) {
        return detail.to_string();
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return "it is encrypted; consentry needs an unencrypted key".to_string();
    }
    match text.find("-----BEGIN ") {
        Some(_) => format!("it holds another kind of PEM block, not `{begin}`"),
        None => format!("no `{begin}` line found"),
    }
}

/// Best-effort overwrite of secret bytes before they are dropped.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// An Ed25519 signing key loaded from a PKCS#8 PEM file.
///
/// `Debug` shows only the key id.
pub struct Signer {
    key: SigningKey,
    public: PublicParts,
}

impl Signer {
    /// Loads the private key at `path` (normally `<dir>/signing.key`).
    ///
    /// Refuses a symbolic link, anything that is not a regular file, and a
    /// file whose mode grants any permission to group or others (the error
    /// says to run `chmod 600 <path>`). The contents must be an unencrypted
    /// PKCS#8 PEM Ed25519 private key (`-----BEGIN PRIVATE KEY-----`, v1 or
    /// v2); if a v2 key embeds a public key it must match the private key.
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        let mut bytes = read_secret_file(path)?;
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "the file is not text".to_string())
            .and_then(|text| {
                SigningKey::from_pkcs8_pem(text)
                    .map_err(|e| pem_problem(text, "PRIVATE KEY", &e.to_string()))
            });
        wipe(&mut bytes);
        let key = parsed.map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            expected: "an Ed25519 private key in PKCS#8 PEM form",
            reason,
        })?;
        let public = PublicParts::of(&key.verifying_key(), path)?;
        Ok(Signer { key, public })
    }

    /// The id of this key (SHA-256 of its public key's SPKI DER).
    pub fn key_id(&self) -> &KeyId {
        &self.public.key_id
    }

    /// The public key as SPKI PEM text, identical to what `keygen` writes
    /// to `signing.pub`.
    pub fn public_key_pem(&self) -> String {
        self.public.pem.clone()
    }

    /// A verifier for this key's signatures.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            key: self.key.verifying_key(),
            key_id: self.public.key_id.clone(),
        }
    }

    /// Signs `payload` as a DSSE envelope of type [`PAYLOAD_TYPE`].
    ///
    /// The signature is pure Ed25519 (not Ed25519ph) over
    /// `pae(PAYLOAD_TYPE, payload)`; the payload and signature are encoded as
    /// standard base64 with padding, and the single signature's `keyid` is
    /// this key's id.
    pub fn sign_envelope(&self, payload: &[u8]) -> Envelope {
        let signature = self.key.sign(&pae(PAYLOAD_TYPE, payload));
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: PAYLOAD_TYPE.to_string(),
            signatures: vec![Signature {
                keyid: self.public.key_id.0.clone(),
                sig: STANDARD.encode(signature.to_bytes()),
            }],
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.public.key_id.0)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key that checks envelope signatures.
///
/// `Debug` shows only the key id.
#[derive(Clone)]
pub struct Verifier {
    key: VerifyingKey,
    key_id: KeyId,
}

impl Verifier {
    /// Loads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`) from the
    /// regular file at `path`. Public keys are not secret, so symlinks and
    /// permissive modes are accepted.
    pub fn load(path: &Path) -> Result<Verifier, KeyError> {
        let bytes = read_public_file(path)?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            expected: "an Ed25519 public key in SPKI PEM form",
            reason,
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| malformed("the file is not text".to_string()))?;
        let key = VerifyingKey::from_public_key_pem(text)
            .map_err(|e| malformed(pem_problem(text, "PUBLIC KEY", &e.to_string())))?;
        Verifier::from_key(key, path)
    }

    /// Parses SPKI PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Verifier, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::MalformedPem {
            reason: pem_problem(pem, "PUBLIC KEY", &e.to_string()),
        })?;
        Verifier::from_key(key, Path::new("<public key>"))
    }

    fn from_key(key: VerifyingKey, path: &Path) -> Result<Verifier, KeyError> {
        let key_id = PublicParts::of(&key, path)?.key_id;
        Ok(Verifier { key, key_id })
    }

    /// The id of this key (SHA-256 of its SPKI DER).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key_id", &self.key_id.0)
            .finish_non_exhaustive()
    }
}

/// Maps subject ids to pseudonyms with a secret 32-byte HMAC-SHA256 key.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: HmacSha256,
}

impl Pseudonymizer {
    /// Loads the pseudonym key at `path` (normally `<dir>/pseudonym.key`).
    ///
    /// Applies the same refusals as [`Signer::load`] (symlink, not a regular
    /// file, group/other permission bits). The file must hold exactly 32 raw
    /// bytes, or 64 hex digits (either case) optionally followed by one
    /// `\n`; anything else is [`KeyError::Malformed`].
    pub fn load(path: &Path) -> Result<Pseudonymizer, KeyError> {
        let mut bytes = read_secret_file(path)?;
        let key = parse_pseudonym_key(&bytes);
        wipe(&mut bytes);
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            expected: PSEUDONYM_KEY_FORMAT,
            reason,
        };
        let mut key = key.map_err(malformed)?;
        let mac = keyed_mac(&key);
        wipe(&mut key);
        let mac = mac.map_err(|_| malformed("the HMAC key was rejected".to_string()))?;
        Ok(Pseudonymizer { mac })
    }

    /// The pseudonym of `subject_id`: lowercase hex of
    /// HMAC-SHA256(key, UTF-8 bytes of `subject_id`), 64 characters.
    /// The same key and id always give the same pseudonym.
    pub fn pseudonym(&self, subject_id: &str) -> String {
        mac_hex(&self.mac, subject_id.as_bytes())
    }
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer").finish_non_exhaustive()
    }
}

/// Decodes the pseudonym key file format; the error describes what was
/// found without quoting it.
fn parse_pseudonym_key(bytes: &[u8]) -> Result<[u8; PSEUDONYM_KEY_LEN], String> {
    if let Ok(raw) = <[u8; PSEUDONYM_KEY_LEN]>::try_from(bytes) {
        return Ok(raw);
    }
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if text.len() != 2 * PSEUDONYM_KEY_LEN {
        return Err(format!("found {} bytes", bytes.len()));
    }
    let mut key = [0u8; PSEUDONYM_KEY_LEN];
    hex::decode_to_slice(text, &mut key)
        .map_err(|_| format!("found {} bytes that are not all hex digits", bytes.len()))?;
    Ok(key)
}

/// HMAC-SHA256 keyed with `key` (any length), ready to be cloned per message.
fn keyed_mac(key: &[u8]) -> Result<HmacSha256, hmac::digest::InvalidLength> {
    HmacSha256::new_from_slice(key)
}

fn mac_hex(keyed: &HmacSha256, data: &[u8]) -> String {
    let mut mac = keyed.clone();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where LEN is the
/// byte length in ASCII decimal without leading zeros.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let header = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A DSSE JSON envelope.
///
/// Unknown fields are ignored when reading, as the DSSE spec requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload, base64 (written as standard base64 with padding).
    pub payload: String,
    /// The payload type; consentry uses [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One or more signatures over `pae(payload_type, payload)`.
    pub signatures: Vec<Signature>,
}

/// One signature in an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signing key's [`KeyId`]; DSSE makes it optional, and an absent
    /// `keyid` reads as empty.
    #[serde(default)]
    pub keyid: String,
    /// The 64-byte Ed25519 signature, base64 (written as standard base64
    /// with padding).
    pub sig: String,
}

/// Checks a DSSE envelope and returns its decoded payload.
///
/// In order: `envelope_json` must be JSON ([`VerifyError::NotJson`]) with the
/// envelope's fields ([`VerifyError::NotEnvelope`]); `payloadType` must equal
/// [`PAYLOAD_TYPE`] ([`VerifyError::WrongPayloadType`]); the payload must be
/// base64 ([`VerifyError::BadBase64`]). Then the signatures whose `keyid`
/// equals `verifier`'s key id are tried (none: [`VerifyError::NoSignatureForKey`];
/// signatures with an empty or different keyid are not tried); the first one
/// that verifies with Ed25519 `verify_strict` over
/// `pae(payloadType, payload)` makes the envelope valid. If none does, the
/// first failure is returned ([`VerifyError::BadBase64`],
/// [`VerifyError::SignatureMalformed`] or [`VerifyError::SignatureInvalid`]).
///
/// Base64 is decoded strictly: padding is required and must be canonical,
/// and whitespace is rejected. As the DSSE protocol requires of verifiers,
/// both the standard alphabet and the URL-safe alphabet are accepted (one
/// alphabet per field, never mixed); consentry itself always writes standard.
pub fn verify_envelope(envelope_json: &[u8], verifier: &Verifier) -> Result<Vec<u8>, VerifyError> {
    let envelope: Envelope =
        serde_json::from_slice(envelope_json).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => VerifyError::NotEnvelope(e.to_string()),
            _ => VerifyError::NotJson(e.to_string()),
        })?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::WrongPayloadType {
            found: excerpt(&envelope.payload_type),
        });
    }
    let payload = decode_base64(&envelope.payload).map_err(|reason| VerifyError::BadBase64 {
        field: "payload".to_string(),
        reason,
    })?;
    let message = pae(&envelope.payload_type, &payload);

    let key_id = verifier.key_id.as_str();
    let mut first_failure = None;
    for (index, signature) in envelope.signatures.iter().enumerate() {
        if signature.keyid != key_id {
            continue;
        }
        match check_signature(index, signature, &message, verifier) {
            Ok(()) => return Ok(payload),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(first_failure.unwrap_or(VerifyError::NoSignatureForKey {
        key_id: key_id.to_string(),
        count: envelope.signatures.len(),
    }))
}

fn check_signature(
    index: usize,
    signature: &Signature,
    message: &[u8],
    verifier: &Verifier,
) -> Result<(), VerifyError> {
    let bytes = decode_base64(&signature.sig).map_err(|reason| VerifyError::BadBase64 {
        field: format!("signatures[{index}].sig"),
        reason,
    })?;
    let parsed =
        Ed25519Signature::from_slice(&bytes).map_err(|_| VerifyError::SignatureMalformed {
            index,
            key_id: verifier.key_id.0.clone(),
            len: bytes.len(),
        })?;
    verifier
        .key
        .verify_strict(message, &parsed)
        .map_err(|_| VerifyError::SignatureInvalid {
            key_id: verifier.key_id.0.clone(),
        })
}

/// Strict padded base64, standard alphabet first, then URL-safe.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .or_else(|standard_err| URL_SAFE.decode(text).map_err(|_| standard_err))
        .map_err(|e| e.to_string())
}

/// A short excerpt of untrusted text for an error message.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `path` as a single shell word, for the `chmod` hint.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;
    use tempfile::TempDir;

    fn fresh_keys() -> (TempDir, KeyId) {
        let dir = TempDir::new().unwrap();
        let id = keygen(dir.path()).unwrap();
        (dir, id)
    }

    fn signer_in(dir: &TempDir) -> Signer {
        Signer::load(&dir.path().join(SIGNING_KEY_FILE)).unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn edit_envelope(envelope: &Envelope, edit: impl FnOnce(&mut Envelope)) -> Vec<u8> {
        let mut copy = envelope.clone();
        edit(&mut copy);
        serde_json::to_vec(&copy).unwrap()
    }

    #[test]
    fn pae_matches_dsse_test_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn keygen_writes_three_files_with_modes() {
        let (dir, _) = fresh_keys();
        assert_eq!(mode_of(&dir.path().join(SIGNING_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&dir.path().join(PUBLIC_KEY_FILE)), 0o644);
        assert_eq!(mode_of(&dir.path().join(PSEUDONYM_KEY_FILE)), 0o600);
        let private = fs::read_to_string(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let public = fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            fs::read(dir.path().join(PSEUDONYM_KEY_FILE)).unwrap().len(),
            32
        );
    }

    /// Decodes the single PEM block in `text` without the library under test.
    fn pem_body(text: &str) -> Vec<u8> {
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    #[test]
    fn keygen_writes_pkcs8_v1_private_key() {
        let (dir, _) = fresh_keys();
        let der = pem_body(&fs::read_to_string(dir.path().join(SIGNING_KEY_FILE)).unwrap());
        // RFC 8410 section 7: version 0, Ed25519 OID, nested 32-byte OCTET STRING.
        assert_eq!(der.len(), 48);
        assert_eq!(
            der[..16],
            hex::decode("302e020100300506032b657004220420").unwrap()
        );
        assert_eq!(der[16..], signer_in(&dir).key.to_bytes());
    }

    #[test]
    fn load_accepts_pkcs8_v2_and_checks_its_public_key() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("v2.key");
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        write_with_mode(&path, v2.as_bytes(), 0o600);
        let signer = Signer::load(&path).unwrap();
        let der = key.verifying_key().to_public_key_der().unwrap();
        assert_eq!(signer.key_id(), &KeyId::from_spki_der(der.as_bytes()));

        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        let mismatched = KeypairBytes {
            secret_key: [7u8; 32],
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(other)),
        };
        let pem = mismatched.to_pkcs8_pem(LineEnding::LF).unwrap();
        write_with_mode(&path, pem.as_bytes(), 0o600);
        assert!(matches!(
            Signer::load(&path),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn keygen_creates_missing_directory() {
        let parent = TempDir::new().unwrap();
        let dir = parent.path().join("a").join("keys");
        keygen(&dir).unwrap();
        assert!(dir.join(SIGNING_KEY_FILE).is_file());
    }

    #[test]
    fn keygen_refuses_second_run_and_keeps_first_keys() {
        let (dir, first_id) = fresh_keys();
        let names = [SIGNING_KEY_FILE, PUBLIC_KEY_FILE, PSEUDONYM_KEY_FILE];
        let before: Vec<Vec<u8>> = names
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();

        let err = keygen(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::AlreadyExists { path } if path.ends_with(SIGNING_KEY_FILE))
        );
        assert!(err.to_string().starts_with("refusing to overwrite "));
        assert!(err.to_string().contains(SIGNING_KEY_FILE));

        let after: Vec<Vec<u8>> = names
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(before, after);
        assert_eq!(signer_in(&dir).key_id(), &first_id);
    }

    #[test]
    fn keygen_writes_nothing_if_any_one_file_exists() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join(PSEUDONYM_KEY_FILE), b"old").unwrap();
        let err = keygen(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::AlreadyExists { path } if path.ends_with(PSEUDONYM_KEY_FILE))
        );
        assert!(!dir.path().join(SIGNING_KEY_FILE).exists());
        assert!(!dir.path().join(PUBLIC_KEY_FILE).exists());
        assert_eq!(
            fs::read(dir.path().join(PSEUDONYM_KEY_FILE)).unwrap(),
            b"old"
        );

        // A dangling symlink counts as existing too.
        let other = TempDir::new().unwrap();
        symlink("/nonexistent/target", other.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert!(matches!(
            keygen(other.path()),
            Err(KeyError::AlreadyExists { .. })
        ));
        assert!(!other.path().join(SIGNING_KEY_FILE).exists());
    }

    #[test]
    fn key_id_is_sha256_of_spki_der() {
        let (dir, id) = fresh_keys();
        // Re-derive the DER from the PEM text by hand, not via the library.
        let pem = fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        let der = pem_body(&pem);
        // RFC 8410 Ed25519 SubjectPublicKeyInfo: fixed 12-byte prefix + 32-byte key.
        assert_eq!(der.len(), 44);
        assert_eq!(der[..12], hex::decode("302a300506032b6570032100").unwrap());
        assert_eq!(id.as_str(), hex::encode(Sha256::digest(&der)));
        assert_eq!(id.as_str().len(), 64);

        let signer = signer_in(&dir);
        assert_eq!(signer.key_id(), &id);
        assert_eq!(signer.public_key_pem(), pem);
        let verifier = Verifier::load(&dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(verifier.key_id(), &id);
        assert_eq!(Verifier::from_pem(&pem).unwrap().key_id(), &id);
    }

    #[test]
    fn sign_verify_round_trip() {
        let (dir, id) = fresh_keys();
        let signer = signer_in(&dir);
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#;
        let envelope = signer.sign_envelope(payload);
        assert_eq!(envelope.payload_type, PAYLOAD_TYPE);
        assert_eq!(envelope.payload, STANDARD.encode(payload));
        assert_eq!(envelope.signatures.len(), 1);
        assert_eq!(envelope.signatures[0].keyid, id.as_str());

        let json = serde_json::to_vec(&envelope).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["payloadType"], PAYLOAD_TYPE);

        let verifier = Verifier::load(&dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(verify_envelope(&json, &verifier).unwrap(), payload.to_vec());
        assert_eq!(
            verify_envelope(&json, &signer.verifier()).unwrap(),
            payload.to_vec()
        );
    }

    #[test]
    fn empty_payload_round_trips() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let json = serde_json::to_vec(&signer.sign_envelope(b"")).unwrap();
        assert_eq!(verify_envelope(&json, &signer.verifier()).unwrap(), b"");
    }

    #[test]
    fn tampered_payload_is_signature_invalid() {
        let (dir, id) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"{\"consented\":1000}");
        let json = edit_envelope(&envelope, |e| {
            let mut bytes = STANDARD.decode(&e.payload).unwrap();
            bytes[14] ^= 0x01;
            e.payload = STANDARD.encode(bytes);
        });
        let err = verify_envelope(&json, &signer.verifier()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::SignatureInvalid {
                key_id: id.to_string()
            }
        );
        assert!(err.to_string().starts_with("the signature from key "));
    }

    #[test]
    fn tampered_signature_is_signature_invalid() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"report");
        let json = edit_envelope(&envelope, |e| {
            let mut sig = STANDARD.decode(&e.signatures[0].sig).unwrap();
            sig[0] ^= 0x80;
            e.signatures[0].sig = STANDARD.encode(sig);
        });
        assert!(matches!(
            verify_envelope(&json, &signer.verifier()),
            Err(VerifyError::SignatureInvalid { .. })
        ));

        let short = edit_envelope(&envelope, |e| {
            e.signatures[0].sig = STANDARD.encode([0u8; 63]);
        });
        assert!(matches!(
            verify_envelope(&short, &signer.verifier()),
            Err(VerifyError::SignatureMalformed {
                index: 0,
                len: 63,
                ..
            })
        ));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let (dir_a, _) = fresh_keys();
        let (dir_b, id_b) = fresh_keys();
        let signer_a = signer_in(&dir_a);
        let verifier_b = signer_in(&dir_b).verifier();
        let envelope = signer_a.sign_envelope(b"report");

        // Honest keyid: B finds no signature of its own.
        let json = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            verify_envelope(&json, &verifier_b).unwrap_err(),
            VerifyError::NoSignatureForKey {
                key_id: id_b.to_string(),
                count: 1
            }
        );
        // Forged keyid: the keyid is only a hint, the signature still fails.
        let forged = edit_envelope(&envelope, |e| e.signatures[0].keyid = id_b.to_string());
        assert!(matches!(
            verify_envelope(&forged, &verifier_b),
            Err(VerifyError::SignatureInvalid { .. })
        ));
    }

    #[test]
    fn keyid_mismatch_is_no_signature_for_key() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"report");
        for keyid in ["", "0000", &signer.key_id().as_str().to_uppercase()] {
            let json = edit_envelope(&envelope, |e| e.signatures[0].keyid = keyid.to_string());
            let err = verify_envelope(&json, &signer.verifier()).unwrap_err();
            assert!(matches!(
                err,
                VerifyError::NoSignatureForKey { count: 1, .. }
            ));
        }
        let none = edit_envelope(&envelope, |e| e.signatures.clear());
        assert!(matches!(
            verify_envelope(&none, &signer.verifier()),
            Err(VerifyError::NoSignatureForKey { count: 0, .. })
        ));
    }

    #[test]
    fn second_signature_from_our_key_is_found() {
        let (dir_a, _) = fresh_keys();
        let (dir_b, _) = fresh_keys();
        let signer_a = signer_in(&dir_a);
        let signer_b = signer_in(&dir_b);
        let mut envelope = signer_a.sign_envelope(b"report");
        envelope
            .signatures
            .extend(signer_b.sign_envelope(b"report").signatures);
        let json = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            verify_envelope(&json, &signer_b.verifier()).unwrap(),
            b"report"
        );
    }

    #[test]
    fn wrong_payload_type_is_rejected() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"report");
        let json = edit_envelope(&envelope, |e| e.payload_type = "application/json".into());
        let err = verify_envelope(&json, &signer.verifier()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::WrongPayloadType {
                found: "application/json".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "the envelope's payload type is \"application/json\", but consentry audit reports use \"application/vnd.in-toto+json\""
        );
        let long = edit_envelope(&envelope, |e| e.payload_type = "x\n".repeat(1000));
        let message = verify_envelope(&long, &signer.verifier())
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400 && !message.contains('\n'));
    }

    #[test]
    fn bad_base64_is_rejected() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"ab");
        assert_eq!(envelope.payload, "YWI=");
        for bad in ["YWI", "YW I=", "!!!!", "YWJ=", "YWI=\n"] {
            let json = edit_envelope(&envelope, |e| e.payload = bad.into());
            let err = verify_envelope(&json, &signer.verifier()).unwrap_err();
            assert!(
                matches!(&err, VerifyError::BadBase64 { field, .. } if field == "payload"),
                "{bad:?} gave {err:?}"
            );
        }
        let json = edit_envelope(&envelope, |e| e.signatures[0].sig = "%%%%".into());
        assert!(matches!(
            verify_envelope(&json, &signer.verifier()),
            Err(VerifyError::BadBase64 { field, .. }) if field == "signatures[0].sig"
        ));
    }

    #[test]
    fn url_safe_base64_is_accepted() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let payload = [0xfbu8, 0xff, 0xbf, 0x00];
        let envelope = signer.sign_envelope(&payload);
        assert!(envelope.payload.contains('+') || envelope.payload.contains('/'));
        let json = edit_envelope(&envelope, |e| {
            e.payload = URL_SAFE.encode(payload);
            let sig = STANDARD.decode(&e.signatures[0].sig).unwrap();
            e.signatures[0].sig = URL_SAFE.encode(sig);
        });
        assert_eq!(verify_envelope(&json, &signer.verifier()).unwrap(), payload);
    }

    #[test]
    fn not_json_and_not_envelope_are_distinguished() {
        let (dir, _) = fresh_keys();
        let verifier = signer_in(&dir).verifier();
        for input in [&b""[..], b"not json", b"{\"payload\":", b"\xff\xfe"] {
            assert!(matches!(
                verify_envelope(input, &verifier),
                Err(VerifyError::NotJson(_))
            ));
        }
        for input in [
            &b"{}"[..],
            b"[]",
            b"42",
            b"{\"payload\":\"\",\"payloadType\":\"application/vnd.in-toto+json\"}",
            b"{\"payload\":\"\",\"payloadType\":\"application/vnd.in-toto+json\",\"signatures\":[{\"keyid\":\"k\"}]}",
        ] {
            assert!(matches!(
                verify_envelope(input, &verifier),
                Err(VerifyError::NotEnvelope(_))
            ));
        }
    }

    #[test]
    fn envelope_parsing_follows_dsse_rules() {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let envelope = signer.sign_envelope(b"report");
        // Unknown fields are ignored.
        let mut value = serde_json::to_value(&envelope).unwrap();
        value["extra"] = serde_json::json!("ignored");
        value["signatures"][0]["extra"] = serde_json::json!(1);
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(
            verify_envelope(&json, &signer.verifier()).unwrap(),
            b"report"
        );
        // An absent keyid parses as empty (and so matches no key).
        value["signatures"][0]
            .as_object_mut()
            .unwrap()
            .remove("keyid");
        let json = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            verify_envelope(&json, &signer.verifier()),
            Err(VerifyError::NoSignatureForKey { .. })
        ));
    }

    #[test]
    fn load_refuses_group_readable_signing_key() {
        let (dir, _) = fresh_keys();
        let path = dir.path().join(SIGNING_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Signer::load(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o644, .. }
        ));
        let message = err.to_string();
        assert!(message.starts_with("refusing to load "));
        assert!(message.contains(&format!("chmod 600 {}", path.display())));
        assert!(message.contains("0644"));
    }

    #[test]
    fn chmod_hint_quotes_awkward_paths() {
        assert_eq!(shell_quote(Path::new("/k/signing.key")), "/k/signing.key");
        assert_eq!(shell_quote(Path::new("/my keys/a'b")), r"'/my keys/a'\''b'");
    }

    #[test]
    fn load_refuses_symlink_to_good_key() {
        let (dir, _) = fresh_keys();
        let link = dir.path().join("link.key");
        symlink(dir.path().join(SIGNING_KEY_FILE), &link).unwrap();
        let err = Signer::load(&link).unwrap_err();
        assert!(matches!(err, KeyError::Symlink { .. }));
        assert!(err.to_string().contains("link.key"));

        let pseudo_link = dir.path().join("link.pseudo");
        symlink(dir.path().join(PSEUDONYM_KEY_FILE), &pseudo_link).unwrap();
        assert!(matches!(
            Pseudonymizer::load(&pseudo_link),
            Err(KeyError::Symlink { .. })
        ));
    }

    #[test]
    fn load_refuses_directory() {
        let dir = TempDir::new().unwrap();
        let sub = dir.path().join("keydir");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            Signer::load(&sub),
            Err(KeyError::NotRegularFile { .. })
        ));
        assert!(matches!(
            Pseudonymizer::load(&sub),
            Err(KeyError::NotRegularFile { .. })
        ));
        assert!(matches!(
            Verifier::load(&sub),
            Err(KeyError::NotRegularFile { .. })
        ));
    }

    #[test]
    fn load_reports_missing_file() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("absent.key");
        let err = Signer::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }));
        assert!(err.to_string().contains("absent.key"));
    }

    #[test]
    fn load_refuses_garbage_without_echoing_it() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("garbage.key");
        let cases: [&[u8]; 4] = [
            b"SECRETGARBAGE not a key at all",
            b"-----BEGIN PRIVATE KEY-----\nU0VDUkVUR0FSQkFHRQ==\n-----END PRIVATE KEY-----\n",
            b"\xff\x00SECRETGARBAGE",
            b"",
        ];
        for contents in cases {
            write_with_mode(&path, contents, 0o600);
            let err = Signer::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("garbage.key"), "{message}");
            assert!(!message.contains("SECRETGARBAGE") && !message.contains("U0VDUkVU"));
        }
        // A public key is not a private key.
        let (keys, _) = fresh_keys();
        let public = fs::read(keys.path().join(PUBLIC_KEY_FILE)).unwrap();
        write_with_mode(&path, &public, 0o600);
        assert!(matches!(
            Signer::load(&path),
            Err(KeyError::Malformed { .. })
        ));
        // And a private key is not a public key.
        let private = fs::read(keys.path().join(SIGNING_KEY_FILE)).unwrap();
        write_with_mode(&path, &private, 0o600);
        let err = Verifier::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }));
        assert!(matches!(
            Verifier::from_pem("garbage"),
            Err(KeyError::MalformedPem { .. })
        ));
    }

    #[test]
    fn pem_problems_are_explained() {
        let detail = "parser detail";
        assert_eq!(
            pem_problem("garbage", "PRIVATE KEY", detail),
            "no `-----BEGIN PRIVATE KEY-----` line found"
        );
        assert_eq!(
            pem_problem("-----BEGIN PUBLIC KEY-----\n", "PRIVATE KEY", detail),
            "it holds another kind of PEM block, not `-----BEGIN PRIVATE KEY-----`"
        );
        assert!(pem_problem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "PRIVATE KEY",
            detail
        )
        .contains("encrypted"));
        assert_eq!(
            pem_problem("-----BEGIN PRIVATE KEY-----\n", "PRIVATE KEY", detail),
            detail
        );
    }

    #[test]
    fn load_refuses_oversized_file() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("huge.key");
        write_with_mode(&path, &vec![b'A'; 100_000], 0o600);
        assert!(matches!(
            Signer::load(&path),
            Err(KeyError::TooLarge { .. })
        ));
    }

    #[test]
    fn pseudonym_key_of_wrong_length_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("pseudonym.key");
        for contents in [vec![7u8; 31], vec![7u8; 33], Vec::new(), vec![b'a'; 63]] {
            write_with_mode(&path, &contents, 0o600);
            let err = Pseudonymizer::load(&path).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("exactly 32 raw bytes"), "{message}");
            assert!(message.contains(&format!("found {} bytes", contents.len())));
        }
        let not_hex = "g".repeat(64);
        write_with_mode(&path, not_hex.as_bytes(), 0o600);
        let message = Pseudonymizer::load(&path).unwrap_err().to_string();
        assert!(message.contains("not all hex digits") && !message.contains("gggg"));
        write_with_mode(&path, format!("{}\r\n", "ab".repeat(32)).as_bytes(), 0o600);
        assert!(Pseudonymizer::load(&path).is_err());
    }

    #[test]
    fn pseudonym_key_permissions_are_checked() {
        let (dir, _) = fresh_keys();
        let path = dir.path().join(PSEUDONYM_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Pseudonymizer::load(&path),
            Err(KeyError::InsecurePermissions { mode: 0o640, .. })
        ));
    }

    #[test]
    fn pseudonym_key_hex_form_matches_raw_form() {
        let (dir, _) = fresh_keys();
        let raw_path = dir.path().join(PSEUDONYM_KEY_FILE);
        let raw = fs::read(&raw_path).unwrap();
        let from_raw = Pseudonymizer::load(&raw_path).unwrap();
        let hex_path = dir.path().join("hex.key");
        for text in [
            hex::encode(&raw),
            format!("{}\n", hex::encode(&raw)),
            hex::encode_upper(&raw),
        ] {
            write_with_mode(&hex_path, text.as_bytes(), 0o600);
            let from_hex = Pseudonymizer::load(&hex_path).unwrap();
            assert_eq!(from_hex.pseudonym("user-42"), from_raw.pseudonym("user-42"));
        }
    }

    #[test]
    fn pseudonym_is_deterministic_and_key_dependent() {
        let (dir_a, _) = fresh_keys();
        let (dir_b, _) = fresh_keys();
        let a = Pseudonymizer::load(&dir_a.path().join(PSEUDONYM_KEY_FILE)).unwrap();
        let a_again = Pseudonymizer::load(&dir_a.path().join(PSEUDONYM_KEY_FILE)).unwrap();
        let b = Pseudonymizer::load(&dir_b.path().join(PSEUDONYM_KEY_FILE)).unwrap();
        let p = a.pseudonym("user-42");
        assert_eq!(p.len(), 64);
        assert!(p
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(p, a.pseudonym("user-42"));
        assert_eq!(p, a_again.pseudonym("user-42"));
        assert_ne!(p, a.pseudonym("user-43"));
        assert_ne!(p, b.pseudonym("user-42"));
    }

    #[test]
    fn pseudonym_is_hmac_sha256_of_subject_id() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("pseudonym.key");
        let key = [0x0bu8; 32];
        write_with_mode(&path, &key, 0o600);
        let pseudonymizer = Pseudonymizer::load(&path).unwrap();
        let expected = mac_hex(&keyed_mac(&key).unwrap(), "subject".as_bytes());
        assert_eq!(pseudonymizer.pseudonym("subject"), expected);
    }

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        let mac = keyed_mac(b"Jefe").unwrap();
        assert_eq!(
            mac_hex(&mac, b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let (dir, id) = fresh_keys();
        let signer = signer_in(&dir);
        let secret_hex = hex::encode(signer.key.to_bytes());
        let debug = format!("{signer:?}");
        assert!(debug.contains(id.as_str()));
        assert!(!debug.contains(&secret_hex));
        assert!(!format!("{signer:#?}").contains(&secret_hex));

        let raw = fs::read(dir.path().join(PSEUDONYM_KEY_FILE)).unwrap();
        let pseudonymizer = Pseudonymizer::load(&dir.path().join(PSEUDONYM_KEY_FILE)).unwrap();
        let debug = format!("{pseudonymizer:?}");
        assert_eq!(debug, "Pseudonymizer { .. }");
        assert!(!debug.contains(&hex::encode(raw)));

        let verifier = signer.verifier();
        assert_eq!(
            format!("{verifier:?}"),
            format!("Verifier {{ key_id: {:?}, .. }}", id.as_str())
        );
    }

    #[test]
    fn error_messages_start_lowercase() {
        let dir = TempDir::new().unwrap();
        let errors: Vec<String> = vec![
            Signer::load(&dir.path().join("x")).unwrap_err().to_string(),
            VerifyError::NotJson("x".into()).to_string(),
            VerifyError::NotEnvelope("x".into()).to_string(),
            VerifyError::SignatureMalformed {
                index: 0,
                key_id: "k".into(),
                len: 1,
            }
            .to_string(),
        ];
        for e in errors {
            assert!(e.starts_with(|c: char| c.is_ascii_lowercase()), "{e}");
        }
    }

    // ---- interoperability with independent implementations ----

    /// Whether `program args` runs and exits 0. Interop tests skip (with a
    /// note on stderr) when it does not, unless CONSENTRY_REQUIRE_INTEROP is
    /// set, in which case they fail.
    fn tool_works(what: &str, program: &str, args: &[&str]) -> bool {
        let ok = Command::new(program)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var_os("CONSENTRY_REQUIRE_INTEROP").is_none(),
                "{what} is required (CONSENTRY_REQUIRE_INTEROP is set) but `{program} {}` failed",
                args.join(" ")
            );
            eprintln!(
                "skipping: {what} is not available (`{program} {}` failed)",
                args.join(" ")
            );
        }
        ok
    }

    /// A key directory plus `pae.bin`, `sig.bin` (raw 64 bytes) and
    /// `pae-tampered.bin` for a freshly signed envelope.
    fn interop_fixture() -> (TempDir, Signer) {
        let (dir, _) = fresh_keys();
        let signer = signer_in(&dir);
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
        let envelope = signer.sign_envelope(payload);
        let message = pae(PAYLOAD_TYPE, payload);
        let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
        fs::write(dir.path().join("pae.bin"), &message).unwrap();
        fs::write(dir.path().join("sig.bin"), sig).unwrap();
        let mut tampered = message;
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        fs::write(dir.path().join("pae-tampered.bin"), tampered).unwrap();
        (dir, signer)
    }

    fn run_in(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
        Command::new(program)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn interop_openssl() {
        if !tool_works("openssl", "openssl", &["version"]) {
            return;
        }
        let (dir, signer) = interop_fixture();
        let verify = |input: &str| {
            run_in(
                dir.path(),
                "openssl",
                &[
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    "signing.pub",
                    "-rawin",
                    "-in",
                    input,
                    "-sigfile",
                    "sig.bin",
                ],
            )
        };
        let good = verify("pae.bin");
        assert!(
            good.status.success(),
            "openssl rejected our signature: {}{}",
            String::from_utf8_lossy(&good.stdout),
            String::from_utf8_lossy(&good.stderr)
        );
        assert!(String::from_utf8_lossy(&good.stdout).contains("Signature Verified Successfully"));
        let bad = verify("pae-tampered.bin");
        assert!(!bad.status.success(), "openssl accepted a tampered message");

        // OpenSSL reads our PKCS#8 private key and derives the same public key.
        let derived = run_in(
            dir.path(),
            "openssl",
            &["pkey", "-in", "signing.key", "-pubout"],
        );
        assert!(
            derived.status.success(),
            "{}",
            String::from_utf8_lossy(&derived.stderr)
        );
        assert_eq!(
            String::from_utf8(derived.stdout).unwrap(),
            signer.public_key_pem()
        );

        // Key id = sha256 of the SPKI DER as OpenSSL encodes it.
        let der = run_in(
            dir.path(),
            "openssl",
            &["pkey", "-pubin", "-in", "signing.pub", "-outform", "DER"],
        );
        assert!(der.status.success());
        assert_eq!(KeyId::from_spki_der(&der.stdout), *signer.key_id());

        // And the reverse: a key made by OpenSSL loads, and OpenSSL checks
        // what we sign with it.
        let made = run_in(
            dir.path(),
            "openssl",
            &["genpkey", "-algorithm", "ed25519", "-out", "ossl.key"],
        );
        assert!(made.status.success());
        let ossl_key = dir.path().join("ossl.key");
        fs::set_permissions(&ossl_key, fs::Permissions::from_mode(0o600)).unwrap();
        let ossl_signer = Signer::load(&ossl_key).unwrap();
        fs::write(dir.path().join("ossl.pub"), ossl_signer.public_key_pem()).unwrap();
        let envelope = ossl_signer.sign_envelope(b"report");
        fs::write(
            dir.path().join("ossl-pae.bin"),
            pae(PAYLOAD_TYPE, b"report"),
        )
        .unwrap();
        let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
        fs::write(dir.path().join("ossl-sig.bin"), sig).unwrap();
        let checked = run_in(
            dir.path(),
            "openssl",
            &[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "ossl.pub",
                "-rawin",
                "-in",
                "ossl-pae.bin",
                "-sigfile",
                "ossl-sig.bin",
            ],
        );
        assert!(checked.status.success());
        eprintln!("openssl verified the DSSE signature and read both key files");
    }

    const PYTHON_VERIFY: &str = "\
import sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
pub = serialization.load_pem_public_key(open('signing.pub', 'rb').read())
assert isinstance(pub, Ed25519PublicKey)
priv = serialization.load_pem_private_key(open('signing.key', 'rb').read(), None)
assert isinstance(priv, Ed25519PrivateKey)
raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
assert priv.public_key().public_bytes(*raw) == pub.public_bytes(*raw)
sig = open('sig.bin', 'rb').read()
pub.verify(sig, open('pae.bin', 'rb').read())
try:
    pub.verify(sig, open('pae-tampered.bin', 'rb').read())
    sys.exit('tampered message verified')
except InvalidSignature:
    pass
print('ok')
";

    #[test]
    fn interop_python_cryptography() {
        if !tool_works(
            "python3 with the cryptography package",
            "python3",
            &["-c", "import cryptography"],
        ) {
            return;
        }
        let (dir, _) = interop_fixture();
        let out = run_in(dir.path(), "python3", &["-c", PYTHON_VERIFY]);
        assert!(
            out.status.success(),
            "python cryptography rejected our keys or signature: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        eprintln!("python cryptography verified the DSSE signature and loaded both key files");
    }
}
