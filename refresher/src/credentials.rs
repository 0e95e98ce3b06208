//! AWS credentials from a MachineSet's credentials Secret (upstream rules): key `credentials` (a
//! shared config/credentials file, used verbatim) wins over `aws_access_key_id` +
//! `aws_secret_access_key`. Secret values never appear in `Debug`, logs or errors.

use std::collections::BTreeMap;
use std::fmt;

/// Secret key holding a whole shared credentials/config file.
pub const KEY_CREDENTIALS_FILE: &str = "credentials";
pub const KEY_ACCESS_KEY_ID: &str = "aws_access_key_id";
pub const KEY_SECRET_ACCESS_KEY: &str = "aws_secret_access_key";

/// Credentials read from a Secret.
#[derive(Clone, PartialEq, Eq)]
pub enum AwsCredentials {
    /// Contents of a shared config/credentials file (static keys, `role_arn` +
    /// `web_identity_token_file`, `source_profile` chains), parsed from memory.
    SharedFile(String),
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
    /// An AWSClusterStaticIdentity's Secret (CAPA's keys), which may carry a session token.
    Session {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// The refresher's own default credential chain (IRSA, EKS pod identity, environment), for
    /// Cluster API clusters without a static identity when the admin opts in.
    DefaultChain,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsCredentials::SharedFile(_) => f.write_str("SharedFile(<redacted>)"),
            AwsCredentials::Static { access_key_id, .. } => {
                write!(
                    f,
                    "Static {{ access_key_id: {access_key_id:?}, secret_access_key: <redacted> }}"
                )
            }
            AwsCredentials::Session { access_key_id, .. } => write!(
                f,
                "Session {{ access_key_id: {access_key_id:?}, secret_access_key: <redacted>, session_token: <redacted> }}"
            ),
            AwsCredentials::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

/// Why a Secret gives no usable credentials. Names keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "has no usable AWS credentials: it needs key `credentials` (a shared credentials file) or both `aws_access_key_id` and `aws_secret_access_key` (keys present: {present})"
    )]
    NoUsableKeys { present: String },
    #[error("key `{0}` is not UTF-8 text")]
    NotUtf8(&'static str),
    #[error(
        "has no usable AWS credentials: CAPA reads keys `AccessKeyID` and `SecretAccessKey` (and optionally `SessionToken`) from it (keys present: {present})"
    )]
    NoStaticIdentityKeys { present: String },
}

fn present_keys(data: &BTreeMap<String, Vec<u8>>) -> String {
    if data.is_empty() {
        "none".to_string()
    } else {
        data.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn text(
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<Option<String>, CredentialsError> {
    match data.get(key) {
        None => Ok(None),
        Some(bytes) => {
            let s = std::str::from_utf8(bytes).map_err(|_| CredentialsError::NotUtf8(key))?;
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
    }
}

impl AwsCredentials {
    /// Reads the (already base64-decoded) `data` of a credentials Secret.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, CredentialsError> {
        if let Some(file) = text(data, KEY_CREDENTIALS_FILE)? {
            return Ok(AwsCredentials::SharedFile(file));
        }
        match (
            text(data, KEY_ACCESS_KEY_ID)?,
            text(data, KEY_SECRET_ACCESS_KEY)?,
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(AwsCredentials::Static {
                access_key_id,
                secret_access_key,
            }),
            _ => Err(CredentialsError::NoUsableKeys {
                present: present_keys(data),
            }),
        }
    }

    /// Reads the `data` of an AWSClusterStaticIdentity's Secret, with CAPA's key names.
    pub fn from_static_identity_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, CredentialsError> {
        use capa_core::capi::{
            STATIC_IDENTITY_ACCESS_KEY_ID as ID, STATIC_IDENTITY_SECRET_ACCESS_KEY as KEY,
            STATIC_IDENTITY_SESSION_TOKEN as TOKEN,
        };
        match (text(data, ID)?, text(data, KEY)?) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(AwsCredentials::Session {
                access_key_id,
                secret_access_key,
                session_token: text(data, TOKEN)?,
            }),
            _ => Err(CredentialsError::NoStaticIdentityKeys {
                present: present_keys(data),
            }),
        }
    }

    /// A non-secret identity for caches and logs: the access key id, else the role ARN of the
    /// default profile, else a fingerprint of the file.
    pub fn identity(&self) -> String {
        match self {
            AwsCredentials::Static { access_key_id, .. }
            | AwsCredentials::Session { access_key_id, .. } => access_key_id.clone(),
            AwsCredentials::DefaultChain => "default-chain".to_string(),
            AwsCredentials::SharedFile(file) => {
                let default = default_profile(file);
                default
                    .get("aws_access_key_id")
                    .or_else(|| default.get("role_arn"))
                    .cloned()
                    .unwrap_or_else(|| format!("file:{:016x}", fnv1a(file.as_bytes())))
            }
        }
    }
}

/// `key = value` pairs of the `[default]` (or `[profile default]`) section of an INI file.
fn default_profile(file: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut in_default = false;
    for line in file.lines() {
        let line = line.trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_default = section == "default" || section == "profile default";
        } else if in_default && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn shared_file_wins() {
        let c = AwsCredentials::from_secret_data(&data(&[
            (
                "credentials",
                "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s3cr3t\n",
            ),
            ("aws_access_key_id", "AKIASTATIC"),
            ("aws_secret_access_key", "other"),
        ]))
        .unwrap();
        assert!(matches!(c, AwsCredentials::SharedFile(_)));
        assert_eq!(c.identity(), "AKIAFILE");
    }

    #[test]
    fn static_keys_trimmed() {
        let c = AwsCredentials::from_secret_data(&data(&[
            ("aws_access_key_id", "AKIA123\n"),
            ("aws_secret_access_key", " s3cr3t "),
        ]))
        .unwrap();
        assert_eq!(
            c,
            AwsCredentials::Static {
                access_key_id: "AKIA123".into(),
                secret_access_key: "s3cr3t".into()
            }
        );
        assert_eq!(c.identity(), "AKIA123");
    }

    #[test]
    fn role_identity() {
        let c = AwsCredentials::SharedFile(
            "[profile default]\nrole_arn = arn:aws:iam::1:role/x\nweb_identity_token_file = /t\n"
                .into(),
        );
        assert_eq!(c.identity(), "arn:aws:iam::1:role/x");
        let anon = AwsCredentials::SharedFile("[other]\nx=y\n".into());
        assert!(anon.identity().starts_with("file:"));
    }

    #[test]
    fn errors_name_keys_not_values() {
        let e = AwsCredentials::from_secret_data(&data(&[("aws_access_key_id", "AKIA123")]))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("keys present: aws_access_key_id"), "{msg}");
        assert!(!msg.contains("AKIA123"));
        assert!(
            AwsCredentials::from_secret_data(&BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("keys present: none")
        );
        let empty = data(&[
            ("credentials", "  \n"),
            ("aws_access_key_id", ""),
            ("aws_secret_access_key", "x"),
        ]);
        assert!(AwsCredentials::from_secret_data(&empty).is_err());
        let bad = BTreeMap::from([("credentials".to_string(), vec![0xff, 0xfe])]);
        assert_eq!(
            AwsCredentials::from_secret_data(&bad).unwrap_err(),
            CredentialsError::NotUtf8("credentials")
        );
    }

    #[test]
    fn capa_static_identity_keys() {
        // the keys of CAPA's docs and k0rdent's Secret (fixtures/capi-sources)
        let c = AwsCredentials::from_static_identity_data(&data(&[
            ("AccessKeyID", "AKIAIOSFODNN7EXAMPLE"),
            (
                "SecretAccessKey",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("SessionToken", "tok"),
        ]))
        .unwrap();
        assert_eq!(c.identity(), "AKIAIOSFODNN7EXAMPLE");
        assert!(!format!("{c:?}").contains("tok\""), "{c:?}");
        assert!(matches!(
            c,
            AwsCredentials::Session {
                session_token: Some(_),
                ..
            }
        ));
        // the Machine API key names are not CAPA's
        let e = AwsCredentials::from_static_identity_data(&data(&[
            ("aws_access_key_id", "AKIA"),
            ("aws_secret_access_key", "x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`AccessKeyID` and `SecretAccessKey`"), "{e}");
        assert!(
            e.contains("keys present: aws_access_key_id, aws_secret_access_key"),
            "{e}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = AwsCredentials::Static {
            access_key_id: "AKIA".into(),
            secret_access_key: "TOPSECRET".into(),
        };
        assert!(!format!("{c:?}").contains("TOPSECRET"));
        let f = AwsCredentials::SharedFile("aws_secret_access_key=TOPSECRET".into());
        assert!(!format!("{f:?}").contains("TOPSECRET"));
    }
}
