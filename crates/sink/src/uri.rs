//! MongoDB connection strings, parsed with every message safe to print.
//!
//! A URI carries credentials (its user info) and may carry secrets in option values
//! (`tlsCertificateKeyFilePassword`, `authMechanismProperties`…), and the driver's own parse
//! errors may quote any of it. So nothing taken from a URI reaches a message, a log line or a
//! `Debug` except its scheme, its host list (when every host is a plain `host[:port]`) and its
//! option names: [`redact_uri`] is the one way to show a URI, [`client_options`] and
//! [`client`] the ways to parse one, their errors diagnosed here instead of quoted.

use mongodb::Client;
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ConnectionString, ServerAddress};

/// A MongoDB connection string from the command line or the environment. `Debug` shows it
/// redacted; [`MongoUri::expose`] is the only way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoUri(String);

impl MongoUri {
    /// The URI itself: for the driver only, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URI as logs show it (see [`redact_uri`]).
    pub fn redacted(&self) -> String {
        redact_uri(&self.0)
    }
}

impl From<String> for MongoUri {
    fn from(uri: String) -> Self {
        Self(uri)
    }
}

impl std::fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MongoUri").field(&self.redacted()).finish()
    }
}

/// A URI the driver refused: the redacted URI and what is wrong, never the driver's message
/// (it may quote the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MongoDB URI {redacted}: {problem}")]
pub struct InvalidUri {
    pub redacted: String,
    pub problem: String,
}

impl InvalidUri {
    fn new(uri: &str, problem: String) -> Self {
        Self {
            redacted: redact_uri(uri),
            problem,
        }
    }
}

/// Parses `uri` (resolving `mongodb+srv://` records); an error says what is wrong without
/// quoting the URI.
pub async fn client_options(uri: &str) -> Result<ClientOptions, InvalidUri> {
    ClientOptions::parse(uri)
        .await
        .map_err(|error| InvalidUri::new(uri, diagnose(uri, &error)))
}

/// A client for `options` parsed from `uri`; the driver refuses conflicting options here.
pub fn client(options: ClientOptions, uri: &str) -> Result<Client, InvalidUri> {
    Client::with_options(options).map_err(|error| InvalidUri::new(uri, diagnose(uri, &error)))
}

/// The parts of a URI as the driver splits it, as far as that is unambiguous.
struct Parts<'a> {
    scheme: &'a str,
    /// Before the last `@`, if there is one.
    user_info: Option<&'a str>,
    /// `None` when a `?` precedes the last `@`: either the password holds a `?` or an option
    /// value holds an `@`, and either reading would show part of a secret as a host.
    hosts: Option<&'a str>,
    path: Option<&'a str>,
    options: Option<&'a str>,
}

fn split(uri: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = uri.split_once("://")?;
    if scheme != "mongodb" && scheme != "mongodb+srv" {
        return None;
    }
    let (user_info, after) = match rest.rsplit_once('@') {
        Some((user_info, after)) => (Some(user_info), after),
        None => (None, rest),
    };
    if user_info.is_some_and(|u| u.contains('?')) {
        return Some(Parts {
            scheme,
            user_info,
            hosts: None,
            path: None,
            options: None,
        });
    }
    let (before_options, options) = match after.split_once('?') {
        Some((before, options)) => (before, Some(options)),
        None => (after, None),
    };
    let (hosts, path) = match before_options.split_once('/') {
        Some((hosts, path)) => (hosts, Some(path)),
        None => (before_options, None),
    };
    Some(Parts {
        scheme,
        user_info,
        hosts: Some(hosts),
        path,
        options,
    })
}

/// `uri` for messages: the scheme, `***@` for any credentials, the hosts when each is a plain
/// `host[:port]`, and option names with `***` for every value. The database path is left out.
pub fn redact_uri(uri: &str) -> String {
    let Some(parts) = split(uri) else {
        return "(not a mongodb:// or mongodb+srv:// URI)".to_owned();
    };
    let mut shown = format!("{}://", parts.scheme);
    if parts.user_info.is_some() {
        shown.push_str("***@");
    }
    match parts.hosts {
        Some(hosts) if hosts.split(',').all(is_plain_host) => shown.push_str(hosts),
        Some(_) => shown.push_str("(hosts not shown: not host:port)"),
        None => {
            shown.push_str("(hosts not shown)");
            return shown;
        }
    }
    if let Some(options) = parts.options {
        let names: Vec<String> = options
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_option_name(name) => format!("{name}=***"),
                // Not name=value: whatever it is, it is not shown.
                _ => "***".to_owned(),
            })
            .collect();
        shown.push_str("/?");
        shown.push_str(&names.join("&"));
    }
    shown
}

/// A host name, IPv4 or `[IPv6]` address or percent-encoded socket path, with an optional
/// numeric port: nothing a password fragment could hide in unnoticed.
fn is_plain_host(host: &str) -> bool {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        let ipv6 = !address.is_empty()
            && address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ":.%".contains(c));
        if !ipv6 {
            return false;
        }
        (None, port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    let name_ok = name.is_none_or(|name| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_%".contains(c))
    });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

fn is_option_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters that must be percent-encoded in a user name or password.
const RESERVED_IN_USER_INFO: &str = "/?#[]@";

/// What is wrong with `uri`, found by checking its parts one at a time, so the answer can name
/// a part (the credentials, host 2, option `tls`) without quoting any of it.
fn diagnose(uri: &str, error: &mongodb::error::Error) -> String {
    let Some(parts) = split(uri) else {
        return "it must start with mongodb:// or mongodb+srv://".to_owned();
    };
    if let Some(user_info) = parts.user_info
        && !user_info_is_encoded(user_info)
    {
        return format!(
            "the user name or password holds a character that must be percent-encoded (one of \
             {RESERVED_IN_USER_INFO} : %); encode them, e.g. `/` as %2F and `@` as %40"
        );
    }
    let Some(hosts) = parts.hosts else {
        return "a `?` before the last `@`: percent-encode `?` (%3F) and `@` (%40)".to_owned();
    };
    if let ErrorKind::DnsResolve { .. } = error.kind.as_ref() {
        return if is_plain_host(hosts) {
            format!("resolving the DNS SRV/TXT records of {hosts} failed")
        } else {
            "resolving the host's DNS SRV/TXT records failed".to_owned()
        };
    }
    let host_list: Vec<&str> = hosts.split(',').collect();
    if let Some(index) = host_list
        .iter()
        .position(|host| host.is_empty() || ServerAddress::parse(host).is_err())
    {
        return format!(
            "host {} of {} is not host[:port] (a port is a number up to 65535)",
            index + 1,
            host_list.len()
        );
    }
    if parts.scheme == "mongodb+srv" && (host_list.len() != 1 || hosts.contains(':')) {
        return "mongodb+srv:// takes exactly one host name and no port".to_owned();
    }
    if let Some(path) = parts.path
        && !path.is_empty()
        && ConnectionString::parse(format!("mongodb://localhost/{path}")).is_err()
    {
        return "the database name after the hosts is invalid (no `/ \\ . \" $` or spaces; \
                percent-encode anything else)"
            .to_owned();
    }
    if let Some(options) = parts.options {
        for (index, pair) in options.split('&').enumerate() {
            let name = pair.split_once('=').map(|(name, _)| name);
            let Some(name) = name.filter(|name| is_option_name(name)) else {
                return format!("option {} is not name=value", index + 1);
            };
            if ConnectionString::parse(format!("mongodb://localhost/?{pair}")).is_err() {
                return format!(
                    "option `{name}` is unknown or its value is invalid (the value is not shown)"
                );
            }
        }
    }
    format!(
        "the driver refused it ({}): options that conflict, or that need credentials (e.g. \
         authMechanism); its message is not shown, as it may quote the URI",
        kind_name(error)
    )
}

/// User info as the driver wants it: `user[:password]`, reserved characters percent-encoded.
fn user_info_is_encoded(user_info: &str) -> bool {
    let bytes = user_info.as_bytes();
    let percent_ok = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    percent_ok
        && user_info.matches(':').count() <= 1
        && !user_info.contains(|c| RESERVED_IN_USER_INFO.contains(c))
}

fn kind_name(error: &mongodb::error::Error) -> &'static str {
    match error.kind.as_ref() {
        ErrorKind::InvalidArgument { .. } => "invalid argument",
        ErrorKind::Authentication { .. } => "authentication settings",
        ErrorKind::InvalidTlsConfig { .. } => "TLS settings",
        ErrorKind::Io(_) => "I/O, e.g. a certificate file",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "S3cretPW";

    #[test]
    fn credentials_and_option_values_are_redacted_option_names_and_hosts_kept() {
        assert_eq!(
            redact_uri("mongodb://user:S3cretPW@db1:27017,db2/admin?tls=true&replicaSet=rs0"),
            "mongodb://***@db1:27017,db2/?tls=***&replicaSet=***"
        );
        assert_eq!(
            redact_uri("mongodb://127.0.0.1:27017/?replicaSet=rs0"),
            "mongodb://127.0.0.1:27017/?replicaSet=***"
        );
        assert_eq!(
            redact_uri("mongodb+srv://cluster0.example.net"),
            "mongodb+srv://cluster0.example.net"
        );
        assert_eq!(redact_uri("mongodb://[::1]:27017"), "mongodb://[::1]:27017");
        assert_eq!(
            redact_uri("not a uri S3cretPW"),
            "(not a mongodb:// or mongodb+srv:// URI)"
        );
    }

    #[test]
    fn unparsable_uris_never_show_a_fragment_of_the_password() {
        let hostile = [
            "mongodb://user:S3cretPW/x@127.0.0.1:27017/?replicaSet=rs0",
            "mongodb://user:S3cret?PW@127.0.0.1:27017",
            "mongodb://user:S3cretPW@h@127.0.0.1",
            "mongodb://user:S3cretPW:x@127.0.0.1",
            "mongodb://user:S3cretPW",
            "mongodb://host/?authMechanismProperties=AWS_SESSION_TOKEN:S3cretPW@S3cretPW",
            "mongodb://host/?tlsCertificateKeyFilePassword=S3cretPW",
            "mongodb://host/?S3cretPW",
            "mongodb://host/S3cretPW?x=1",
        ];
        for uri in hostile {
            let shown = redact_uri(uri);
            assert!(!shown.contains("S3cret"), "{uri} → {shown}");
        }
    }

    fn problem(uri: &str) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime
            .block_on(client_options(uri))
            .expect_err("an invalid URI");
        let message = error.to_string();
        assert!(!message.contains(PASSWORD), "{uri} → {message}");
        message
    }

    #[test]
    fn parse_errors_name_the_problem_not_the_uri() {
        let message = problem("mongodb://user:S3cretPW/x@127.0.0.1:27017/?replicaSet=rs0");
        assert!(message.contains("percent-encoded"), "{message}");
        assert!(
            message.contains("mongodb://***@127.0.0.1:27017"),
            "{message}"
        );
        let message = problem("mongodb://user:S3cretPW@127.0.0.1:port");
        assert!(message.contains("host 1 of 1"), "{message}");
        let message = problem("mongodb://127.0.0.1/?tls=S3cretPW");
        assert!(message.contains("option `tls`"), "{message}");
        let message = problem("S3cretPW");
        assert!(message.contains("mongodb://"), "{message}");
        let message = problem("mongodb://user:S3c?retPW@127.0.0.1");
        assert!(message.contains("percent-encoded"), "{message}");
        let message = problem("mongodb://127.0.0.1/?tlsCertificateKeyFilePassword=S3cretPW");
        assert!(
            message.contains("tlsCertificateKeyFilePassword=***"),
            "{message}"
        );
    }

    #[test]
    fn debug_of_a_uri_is_redacted() {
        let uri = MongoUri::from("mongodb://u:S3cretPW@h:1/?appName=S3cretPW".to_owned());
        let debug = format!("{uri:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("h:1"), "{debug}");
    }
}
