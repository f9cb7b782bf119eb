//! Secrets from the environment: `*_FILE` variables (container secrets mounted as files) and
//! the librdkafka pass-through (`TICKSTREAM_KAFKA_CONFIG_*`). Errors name the variable and the
//! file, never what either holds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use tickstream_streams::KafkaSettings;

/// Prefix of environment variables passed to librdkafka as settings:
/// `TICKSTREAM_KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.
pub const KAFKA_CONFIG_ENV_PREFIX: &str = "TICKSTREAM_KAFKA_CONFIG_";

/// `<VAR>_FILE=<path>`: `<VAR>`'s value is the file's content, trimmed.
pub const FILE_SUFFIX: &str = "_FILE";

/// The MongoDB URIs (of `sink`/`query`, and of `run`), which a `_FILE` variant can hold.
pub const MONGODB_URI_VARS: [&str; 2] = ["TICKSTREAM_MONGODB_URI", "TICKSTREAM_RUN_MONGODB_URI"];

/// librdkafka's own settings whose names end in `.file` (paths): their variables keep their
/// meaning; `..._FILE_FILE` reads one of them from a file.
const LIBRDKAFKA_FILE_SETTINGS: [&str; 3] = [
    "sasl.oauthbearer.assertion.file",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.jwt.template.file",
];

/// Everything `reader` holds if that is at most `max` bytes (`None`: more), reading no more than
/// one byte past the limit: the small files we trust (`.env`, secrets) are never read whole if
/// they turn out big.
pub(crate) fn read_at_most(reader: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// A secret larger than this is not a secret but a mistake (a wrong path).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The value of the secret file `path` named by the variable `var`: its content without
/// leading and trailing whitespace (the newline editors add).
pub fn read_secret_file(var: &str, path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{var}: reading {shown}"))?;
    let Some(bytes) = read_at_most(file, MAX_SECRET_FILE_BYTES)
        .with_context(|| format!("{var}: reading {shown}"))?
    else {
        bail!("{var}: {shown} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?");
    };
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("{var}: {shown} is not UTF-8 text");
    };
    let value = text.trim();
    if value.is_empty() {
        bail!("{var}: {shown} is empty");
    }
    if value.contains('\0') {
        bail!("{var}: {shown} holds a NUL byte");
    }
    Ok(value.to_owned())
}

/// For each MongoDB URI variable with a `_FILE` variant set: the file's value, to set as the
/// variable. Both set is an error: which one is meant is not ours to guess.
pub fn mongodb_uris_from_files(
    var: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut resolved = Vec::new();
    for name in MONGODB_URI_VARS {
        let file_var = format!("{name}{FILE_SUFFIX}");
        let Some(path) = var(&file_var) else {
            continue;
        };
        if var(name).is_some() {
            bail!("both {name} and {file_var} are set: keep one");
        }
        resolved.push((name, read_secret_file(&file_var, Path::new(&path))?));
    }
    Ok(resolved)
}

/// librdkafka settings from the `TICKSTREAM_KAFKA_CONFIG_*` variables among `vars`
/// (lower-cased, `_` → `.`); `…_<KEY>_FILE` reads `<key>` from that file. Checked as
/// [`KafkaSettings::new`] does: a refused setting is an error naming its key.
pub fn kafka_settings(
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> anyhow::Result<KafkaSettings> {
    // key → (the variable it came from, value)
    let mut settings: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, value) in vars {
        if !name
            .as_encoded_bytes()
            .starts_with(KAFKA_CONFIG_ENV_PREFIX.as_bytes())
        {
            continue;
        }
        let Some(name) = name.to_str() else {
            bail!("a {KAFKA_CONFIG_ENV_PREFIX}* variable's name is not UTF-8");
        };
        let Some(value) = value.to_str() else {
            bail!("{name} is not UTF-8");
        };
        let (key, from_file) = kafka_key(&name[KAFKA_CONFIG_ENV_PREFIX.len()..]);
        let value = if from_file {
            read_secret_file(name, Path::new(value))?
        } else {
            value.to_owned()
        };
        if key.is_empty() {
            bail!("{name} names no librdkafka setting");
        }
        if let Some((other, _)) = settings.get(&key) {
            bail!("both {other} and {name} set librdkafka's `{key}`: keep one");
        }
        settings.insert(key, (name.to_owned(), value));
    }
    let pairs = settings
        .into_iter()
        .map(|(key, (_, value))| (key, value))
        .collect();
    KafkaSettings::new(pairs)
        .with_context(|| format!("in the {KAFKA_CONFIG_ENV_PREFIX}* variables"))
}

/// The librdkafka key `TICKSTREAM_KAFKA_CONFIG_<suffix>` sets, and whether its value is the
/// path of a file holding the value.
fn kafka_key(suffix: &str) -> (String, bool) {
    let setting = |suffix: &str| suffix.to_ascii_lowercase().replace('_', ".");
    match suffix.strip_suffix(FILE_SUFFIX) {
        Some(key) if !LIBRDKAFKA_FILE_SETTINGS.contains(&setting(suffix).as_str()) => {
            (setting(key), true)
        }
        _ => (setting(suffix), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn kafka_settings_come_from_variables_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let password = dir.path().join("sasl_password");
        std::fs::write(&password, "S3cretPW\n").expect("write");
        let path = password.to_str().expect("UTF-8 path");
        let settings = kafka_settings(vars(&[
            ("TICKSTREAM_KAFKA_CONFIG_SECURITY_PROTOCOL", "SASL_SSL"),
            ("TICKSTREAM_KAFKA_CONFIG_SASL_PASSWORD_FILE", path),
            ("TICKSTREAM_KAFKA_BROKERS", "not a setting"),
        ]))
        .expect("valid");
        let expected = [
            ("sasl.password", "S3cretPW"),
            ("security.protocol", "SASL_SSL"),
        ];
        assert_eq!(
            settings.to_vec(),
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
        assert!(!format!("{settings:?}").contains("S3cretPW"));

        let both = kafka_settings(vars(&[
            ("TICKSTREAM_KAFKA_CONFIG_SASL_PASSWORD", "S3cretPW"),
            ("TICKSTREAM_KAFKA_CONFIG_SASL_PASSWORD_FILE", path),
        ]));
        let message = format!("{:#}", both.expect_err("both set"));
        assert!(
            message.contains("keep one") && !message.contains("S3cretPW"),
            "{message}"
        );
    }

    #[test]
    fn file_variants_read_the_setting_except_librdkafkas_own_file_settings() {
        assert_eq!(
            kafka_key("SASL_PASSWORD_FILE"),
            ("sasl.password".into(), true)
        );
        assert_eq!(
            kafka_key("SSL_KEY_PASSWORD"),
            ("ssl.key.password".into(), false)
        );
        assert_eq!(
            kafka_key("SASL_OAUTHBEARER_ASSERTION_FILE"),
            ("sasl.oauthbearer.assertion.file".into(), false)
        );
        assert_eq!(
            kafka_key("SASL_OAUTHBEARER_ASSERTION_FILE_FILE"),
            ("sasl.oauthbearer.assertion.file".into(), true)
        );
    }

    #[test]
    fn a_denied_setting_is_named_and_its_value_is_not() {
        let error = kafka_settings(vars(&[(
            "TICKSTREAM_KAFKA_CONFIG_PLUGIN_LIBRARY_PATHS",
            "/tmp/S3cretPW.so",
        )]))
        .expect_err("denied");
        let message = format!("{error:#}");
        assert!(message.contains("plugin.library.paths"), "{message}");
        assert!(!message.contains("S3cretPW"), "{message}");
    }

    #[test]
    fn uri_files_are_read_trimmed_and_both_set_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("uri");
        std::fs::write(&file, "  mongodb://u:S3cretPW@h/\n").expect("write");
        let path = OsString::from(&file);
        let only_file = |name: &str| (name == "TICKSTREAM_MONGODB_URI_FILE").then(|| path.clone());
        assert_eq!(
            mongodb_uris_from_files(only_file).expect("read"),
            vec![(
                "TICKSTREAM_MONGODB_URI",
                "mongodb://u:S3cretPW@h/".to_owned()
            )]
        );
        let both = |name: &str| {
            name.starts_with("TICKSTREAM_MONGODB_URI")
                .then(|| path.clone())
        };
        let message = format!("{:#}", mongodb_uris_from_files(both).expect_err("both"));
        assert!(message.contains("TICKSTREAM_MONGODB_URI_FILE"), "{message}");
        let missing = OsString::from(dir.path().join("absent"));
        let absent =
            |name: &str| (name == "TICKSTREAM_RUN_MONGODB_URI_FILE").then(|| missing.clone());
        let message = format!("{:#}", mongodb_uris_from_files(absent).expect_err("absent"));
        assert!(
            message.contains("TICKSTREAM_RUN_MONGODB_URI_FILE") && message.contains("absent"),
            "{message}"
        );
        std::fs::write(&file, "\n").expect("write");
        let message = format!(
            "{:#}",
            mongodb_uris_from_files(only_file).expect_err("empty")
        );
        assert!(message.contains("is empty"), "{message}");
    }
}
