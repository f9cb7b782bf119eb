//! [`TopologyError`].

use std::fmt;
use std::path::PathBuf;

/// Why a topology was refused. `Display` says where (file, key or line), what and how to
/// fix it.
#[derive(Debug)]
#[non_exhaustive]
pub enum TopologyError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type or spelling (the TOML
    /// parser's message, with the offending line).
    Parse {
        /// The file, or `topology` for text.
        origin: String,
        /// The parser's error.
        source: Box<toml::de::Error>,
        /// Extra advice, e.g. where secrets go instead.
        hint: Option<&'static str>,
    },
    /// A value breaks a rule.
    Invalid {
        /// The file, or `topology` for text.
        origin: String,
        /// The key, dotted: `windows[1].size`, `topics.raw.ETHUSDT`, `source.interval`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl TopologyError {
    /// A rule violation at `key`.
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            origin: "topology".to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The same error, reported against `origin` (a file name).
    pub(crate) fn with_origin(mut self, new: &str) -> Self {
        if let Self::Parse { origin, .. } | Self::Invalid { origin, .. } = &mut self {
            new.clone_into(origin);
        }
        self
    }

    /// The offending key, for rule violations.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => {
                write!(f, "cannot read topology file {}: {source}", path.display())
            }
            Self::Parse {
                origin,
                source,
                hint,
            } => {
                write!(f, "{origin}: {}", source.to_string().trim_end())?;
                if let Some(hint) = hint {
                    write!(f, "\nhint: {hint}")?;
                }
                Ok(())
            }
            Self::Invalid {
                origin,
                key,
                problem,
            } => write!(f, "{origin}: invalid `{key}`: {problem}"),
        }
    }
}

impl std::error::Error for TopologyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Parse { source, .. } => Some(source.as_ref()),
            Self::Invalid { .. } => None,
        }
    }
}

/// Keys people reach for when they try to put connection settings in the topology.
const SECRET_KEYS: [&str; 10] = [
    "brokers",
    "bootstrap_servers",
    "bootstrap.servers",
    "uri",
    "url",
    "connection_string",
    "password",
    "username",
    "user",
    "sasl",
];

/// Advice for a parse error, when we have some.
pub(crate) fn hint_for(error: &toml::de::Error) -> Option<&'static str> {
    let message = error.message();
    let unknown = message.strip_prefix("unknown field `")?;
    let field = unknown.split('`').next()?;
    SECRET_KEYS.contains(&field).then_some(
        "connection settings and secrets never go in the topology: set \
         TICKSTREAM_KAFKA_BROKERS and TICKSTREAM_MONGODB_URI in the environment (or a .env file)",
    )
}
