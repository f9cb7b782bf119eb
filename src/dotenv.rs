//! `./.env`: settings for the process from a file, so credentials stay out of command lines.
//!
//! The file is shared with Docker Compose (which reads it for `docker-compose.yml`), and may
//! hold passwords, so it is read strictly and errors never quote it:
//!
//! ```text
//! line       = blank | comment | assignment          (LF or CRLF line ends)
//! comment    = [spaces] "#" anything
//! assignment = [spaces] ["export" spaces] KEY [spaces] "=" [spaces] [VALUE] [spaces [comment]]
//! KEY        = [A-Z_][A-Z0-9_]*
//! VALUE      = bare | "'" literal "'" | '"' text '"'
//! bare       = no spaces, quotes, backslash, "$" or "`"
//! literal    = anything but "'", taken as it is
//! text       = anything but '"', backslash, "$" or "`"
//! ```
//!
//! Compose would expand `$` and backslashes in bare and double-quoted values: refusing them
//! means both read the same value (single quotes for a literal one). `TICKSTREAM_*` keys are
//! set in the environment unless already set there; the keys only Compose reads (`MONGO_*`,
//! `GRAFANA_*`, `COMPOSE_*`, `KAFKA_CLUSTER_ID`) are accepted and ignored; any other key is an
//! error. The file must be a regular file (not a symbolic link), at most 64 KiB, UTF-8 without
//! NUL bytes, and not writable by group or others. Errors give the line number, never the
//! line: a malformed line may well be a password.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::secrets::read_at_most;

/// Larger than any real `.env`; a bigger file is a mistake, not settings.
const MAX_DOTENV_BYTES: u64 = 64 * 1024;

/// Keys Docker Compose reads from `.env` (see `.env.example`); the processes ignore them.
const COMPOSE_KEY_PREFIXES: [&str; 3] = ["MONGO_", "GRAFANA_", "COMPOSE_"];
const COMPOSE_KEYS: [&str; 1] = ["KAFKA_CLUSTER_ID"];

/// One `KEY=VALUE` for this process.
#[derive(Debug, PartialEq, Eq)]
pub struct Assignment {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// The `TICKSTREAM_*` assignments of the `.env` file at `path`, or none if there is no file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Assignment>> {
    let shown = path.display();
    let Some(bytes) = read_private_file(path)? else {
        return Ok(Vec::new());
    };
    parse(&bytes).with_context(|| format!("in {shown}"))
}

/// The file's bytes if it exists and may be trusted: a regular file, not a symbolic link,
/// not writable by anyone but its owner.
fn read_private_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let shown = path.display();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{shown} is a symbolic link: not followed (whoever can change the link would choose \
             the settings); make it a regular file, then `chmod 600 .env`"
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    };
    let metadata = file
        .metadata()
        .with_context(|| format!("reading {shown}"))?;
    if !metadata.is_file() {
        bail!("{shown} is not a regular file");
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "{shown} is writable by group or others (mode {mode:03o}): anyone who can write it \
             chooses the credentials and librdkafka settings; run `chmod 600 .env`"
        );
    }
    let Some(bytes) =
        read_at_most(file, MAX_DOTENV_BYTES).with_context(|| format!("reading {shown}"))?
    else {
        bail!("{shown} is larger than {MAX_DOTENV_BYTES} bytes: not a settings file");
    };
    Ok(Some(bytes))
}

/// The `TICKSTREAM_*` assignments of a `.env` file's content (see the module's grammar).
pub fn parse(bytes: &[u8]) -> anyhow::Result<Vec<Assignment>> {
    let mut assignments: Vec<Assignment> = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.contains(&0) {
            bail!("line {number}: a NUL byte; remove it");
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            bail!("line {number}: not UTF-8 text; save the file as UTF-8");
        };
        let Some((key, value)) = parse_line(line).map_err(|problem| {
            anyhow::anyhow!(
                "line {number}: {problem} (the line is not shown: it may hold a secret)"
            )
        })?
        else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            bail!("line {number}: sets the same key as line {first}; keep one");
        }
        seen.push((key.to_owned(), number));
        if key.starts_with("TICKSTREAM_") {
            assignments.push(Assignment {
                line: number,
                key: key.to_owned(),
                value,
            });
        } else if !is_compose_key(key) {
            bail!(
                "line {number}: the key is neither TICKSTREAM_* nor one Docker Compose reads \
                 (MONGO_*, GRAFANA_*, COMPOSE_*, KAFKA_CLUSTER_ID)"
            );
        }
    }
    Ok(assignments)
}

fn is_compose_key(key: &str) -> bool {
    COMPOSE_KEYS.contains(&key) || COMPOSE_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `None` for a blank or comment line, else the key and the (unquoted) value; the error says
/// what is wrong without quoting anything.
fn parse_line(line: &str) -> Result<Option<(&str, String)>, &'static str> {
    let line = line.trim_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map_or(line, |rest| rest.trim_start_matches([' ', '\t']));
    let Some((key, value)) = line.split_once('=') else {
        return Err("expected KEY=VALUE");
    };
    let key = key.trim_end_matches([' ', '\t']);
    if !is_key(key) {
        return Err("the key must be capital letters, digits and `_`, not starting with a digit");
    }
    Ok(Some((
        key,
        parse_value(value.trim_start_matches([' ', '\t']))?,
    )))
}

fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn parse_value(text: &str) -> Result<String, &'static str> {
    let (value, rest) = match text.chars().next() {
        Some(quote @ ('\'' | '"')) => {
            let inner = &text[1..];
            let Some(end) = inner.find(quote) else {
                return Err("a quoted value without its closing quote (values are one line)");
            };
            let value = &inner[..end];
            if quote == '"' && value.contains(['\\', '$', '`']) {
                return Err(
                    "`\\`, `$` or a backquote in double quotes: use single quotes for a \
                            literal value",
                );
            }
            (value, &inner[end + 1..])
        }
        _ => {
            let end = text.find([' ', '\t']).unwrap_or(text.len());
            let value = &text[..end];
            if value.contains(['\'', '"', '\\', '$', '`']) {
                return Err(
                    "a quote, `\\`, `$` or a backquote in an unquoted value: put the \
                            value in single quotes",
                );
            }
            (value, &text[end..])
        }
    };
    // Only spaces may follow, then a comment, which needs a space before its `#`.
    let trimmed = rest.trim_start_matches([' ', '\t']);
    let comment = trimmed.starts_with('#') && trimmed.len() < rest.len();
    if !trimmed.is_empty() && !comment {
        return Err(
            "something after the value: quote a value with spaces; a comment needs a \
                    space before its `#`",
        );
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .expect("valid")
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    fn error(bytes: &[u8]) -> String {
        let message = format!("{:#}", parse(bytes).expect_err("invalid"));
        assert!(!message.contains("S3cretPW"), "{message}");
        message
    }

    #[test]
    fn the_grammar_comments_quotes_export_and_compose_keys() {
        let text = "# credentials\n\n  TICKSTREAM_A=1\r\nexport TICKSTREAM_B = 'two words # $x'\n\
                    TICKSTREAM_C=\"x=y\"  # a comment\nTICKSTREAM_D=a#b\nTICKSTREAM_E=\n\
                    MONGO_ROOT_PASSWORD=S3cretPW\nGRAFANA_ADMIN_USER=admin\nKAFKA_CLUSTER_ID=abc\n";
        let expected = [
            ("TICKSTREAM_A", "1"),
            ("TICKSTREAM_B", "two words # $x"),
            ("TICKSTREAM_C", "x=y"),
            ("TICKSTREAM_D", "a#b"),
            ("TICKSTREAM_E", ""),
        ];
        assert_eq!(
            pairs(text),
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
    }

    #[test]
    fn errors_give_the_line_number_and_never_the_line() {
        let cases: [(&[u8], &str); 12] = [
            (b"TICKSTREAM_A=1\nS3cretPW\n", "line 2: expected KEY=VALUE"),
            (b"=S3cretPW\n", "line 1: the key must be"),
            (b"S3cretPW=x\n", "line 1: the key must be"),
            (b"OTHER_S3CRETPW=S3cretPW\n", "line 1: the key is neither"),
            (b"TICKSTREAM_A=S3cret\0PW\n", "line 1: a NUL byte"),
            (b"\n\nTICKSTREAM_A=S3cretPW\xff\n", "line 3: not UTF-8"),
            (
                b"TICKSTREAM_A='S3cretPW\n",
                "line 1: a quoted value without",
            ),
            (
                b"TICKSTREAM_A=S3cretPW two\n",
                "line 1: something after the value",
            ),
            (
                b"TICKSTREAM_A='S3cretPW'x\n",
                "line 1: something after the value",
            ),
            (b"TICKSTREAM_A=\"S3cret$PW\"\n", "line 1: `\\`, `$`"),
            (b"TICKSTREAM_A=S3cret$PW\n", "line 1: a quote"),
            (
                b"TICKSTREAM_A=1\nTICKSTREAM_A=S3cretPW\n",
                "line 2: sets the same key as line 1",
            ),
        ];
        for (bytes, expected) in cases {
            let message = error(bytes);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn symlinks_and_group_or_world_writable_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.env");
        std::fs::write(&real, "TICKSTREAM_A=S3cretPW\n").expect("write");
        let mode = |m: u32| {
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(0o600);
        let link = dir.path().join(".env");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let message = format!("{:#}", read(&link).expect_err("a symlink"));
        assert!(message.contains("symbolic link"), "{message}");
        for writable in [0o666, 0o620, 0o602] {
            mode(writable);
            let message = format!("{:#}", read(&real).expect_err("writable by others"));
            assert!(message.contains("chmod 600 .env"), "{message}");
            assert!(!message.contains("S3cretPW"), "{message}");
        }
        mode(0o644);
        assert_eq!(read(&real).expect("readable by others is allowed").len(), 1);
        assert!(read(&dir.path().join("absent")).expect("none").is_empty());
    }
}
