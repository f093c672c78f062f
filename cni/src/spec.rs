//! The CNI invocation's environment: CNI_COMMAND, the attachment variables and CNI_ARGS.
//!
//! Which variables a verb needs (CNI 1.1.0):
//!
//! | verb | required | optional |
//! |---|---|---|
//! | ADD, CHECK | CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME | CNI_ARGS |
//! | DEL | CNI_CONTAINERID, CNI_IFNAME | CNI_NETNS (the namespace may be gone), CNI_ARGS |
//! | STATUS, GC, VERSION | — | — |
//!
//! An empty variable counts as unset, as in the reference implementation. CNI_PATH is not
//! read: neither plugin executes another plugin.

use std::ffi::OsString;
use std::net::IpAddr;

use crate::config::parse_requested_ip;
use crate::error::CniError;
use crate::protocol::PodRef;

/// Where the environment comes from: the process for the binaries, a fake in tests (no
/// `set_var` in tests, which would race between test threads).
pub trait EnvSource {
    fn var(&self, key: &str) -> Option<OsString>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }
}

impl<F: Fn(&str) -> Option<OsString>> EnvSource for F {
    fn var(&self, key: &str) -> Option<OsString> {
        self(key)
    }
}

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// Reads CNI_COMMAND.
pub fn command(env: &dyn EnvSource) -> Result<Command, CniError> {
    let value = var(env, "CNI_COMMAND")?.ok_or(CniError::MissingCommand)?;
    Command::parse(&value).ok_or(CniError::UnknownCommand { command: value })
}

/// The variables of ADD, DEL and CHECK, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    pub container_id: String,
    /// Absent only on DEL.
    pub netns: Option<String>,
    pub ifname: String,
    pub args: CniArgs,
}

/// Reads and validates the attachment variables `command` needs. Every missing variable is
/// named in one error.
pub fn attachment_env(command: Command, env: &dyn EnvSource) -> Result<AttachmentEnv, CniError> {
    let container_id = var(env, "CNI_CONTAINERID")?;
    let netns = var(env, "CNI_NETNS")?;
    let ifname = var(env, "CNI_IFNAME")?;
    let mut missing = Vec::new();
    if container_id.is_none() {
        missing.push("CNI_CONTAINERID".to_owned());
    }
    if netns.is_none() && command != Command::Del {
        missing.push("CNI_NETNS".to_owned());
    }
    if ifname.is_none() {
        missing.push("CNI_IFNAME".to_owned());
    }
    let (container_id, ifname) = match (container_id, ifname) {
        (Some(container_id), Some(ifname)) if missing.is_empty() => (container_id, ifname),
        _ => {
            let reason = format!("not set for {}", command.as_str());
            return Err(CniError::InvalidEnvironment { vars: missing, reason });
        }
    };
    validate_container_id(&container_id).map_err(|reason| CniError::invalid_env("CNI_CONTAINERID", reason))?;
    validate_ifname(&ifname).map_err(|reason| CniError::invalid_env("CNI_IFNAME", reason))?;
    let args = match var(env, "CNI_ARGS")? {
        Some(raw) => parse_cni_args(&raw)?,
        None => CniArgs::default(),
    };
    Ok(AttachmentEnv { container_id, netns, ifname, args })
}

/// What CNI_ARGS says, for the keys we understand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniArgs {
    /// From K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID.
    pub k8s: Option<PodRef>,
    /// From `IP=` (comma-separated), the convention host-local and static follow.
    pub ips: Vec<IpAddr>,
}

/// Parses `KEY=VALUE;KEY=VALUE`. Keys other than ours are an error unless `IgnoreUnknown` is
/// true (kubelet, containerd, CRI-O and podman all set it).
pub fn parse_cni_args(raw: &str) -> Result<CniArgs, CniError> {
    let bad = |reason: String| CniError::invalid_env("CNI_ARGS", reason);
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    let (mut namespace, mut pod, mut uid) = (None, None, None);
    let mut ips = Vec::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad(format!("{pair:?} is not KEY=VALUE")));
        };
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key {
            "IgnoreUnknown" => {
                ignore_unknown = match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some("1" | "true") => true,
                    Some("0" | "false") | None => false,
                    Some(other) => return Err(bad(format!("IgnoreUnknown={other} is not a boolean"))),
                }
            }
            "K8S_POD_NAMESPACE" => namespace = value,
            "K8S_POD_NAME" => pod = value,
            "K8S_POD_UID" => uid = value,
            // Known, not needed: the sandbox is CNI_CONTAINERID already.
            "K8S_POD_INFRA_CONTAINER_ID" => {}
            "IP" => {
                for ip in value.iter().flat_map(|v| v.split(',')) {
                    ips.push(parse_requested_ip(ip).map_err(|reason| bad(format!("IP={ip}: {reason}")))?);
                }
            }
            "" => return Err(bad(format!("{pair:?} has an empty key"))),
            other => unknown.push(other.to_owned()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(bad(format!("unknown keys {} (set IgnoreUnknown=1 to ignore them)", unknown.join(", "))));
    }
    let k8s = match (namespace, pod) {
        (Some(namespace), Some(pod)) => Some(PodRef { namespace, pod, uid }),
        (None, None) => None,
        (Some(_), None) => return Err(bad("K8S_POD_NAMESPACE without K8S_POD_NAME".into())),
        // podman sends K8S_POD_NAME (the container's name) without a namespace: not a
        // Kubernetes pod, so no pod reference (and no reservation keys) rather than a refusal.
        (None, Some(_)) => None,
    };
    Ok(CniArgs { k8s, ips })
}

/// A set, non-empty, UTF-8 variable.
fn var(env: &dyn EnvSource, key: &str) -> Result<Option<String>, CniError> {
    match env.var(key) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| CniError::invalid_env(key, "not valid UTF-8")),
    }
}

/// The spec's rule: an alphanumeric, then alphanumerics, `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(format!("{id:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"))
    }
}

/// Linux's rule for interface names (`dev_valid_name`).
fn validate_ifname(name: &str) -> Result<(), String> {
    if name.len() > 15 {
        return Err(format!("{name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl EnvSource {
        move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn command_is_required_and_known() {
        assert_eq!(command(&env(&[])), Err(CniError::MissingCommand));
        assert_eq!(command(&env(&[("CNI_COMMAND", "")])), Err(CniError::MissingCommand));
        assert_eq!(command(&env(&[("CNI_COMMAND", "add")])), Err(CniError::UnknownCommand { command: "add".into() }));
        for c in [Command::Add, Command::Del, Command::Check, Command::Status, Command::Gc, Command::Version] {
            let value = c.as_str();
            let e = move |key: &str| (key == "CNI_COMMAND").then(|| OsString::from(value));
            assert_eq!(command(&e), Ok(c));
        }
    }

    #[test]
    fn add_needs_container_netns_and_ifname_and_names_every_missing_one() {
        let err = attachment_env(Command::Add, &env(&[("CNI_CONTAINERID", "c1")])).expect_err("missing");
        assert_eq!(
            err,
            CniError::InvalidEnvironment {
                vars: vec!["CNI_NETNS".into(), "CNI_IFNAME".into()],
                reason: "not set for ADD".into()
            }
        );
        assert_eq!(err.code(), 4);
    }

    #[test]
    fn del_does_not_need_the_netns() {
        let got =
            attachment_env(Command::Del, &env(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])).expect("valid");
        assert_eq!(got.netns, None);
        let err = attachment_env(Command::Check, &env(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]))
            .expect_err("CHECK needs it");
        assert!(matches!(err, CniError::InvalidEnvironment { ref vars, .. } if vars == &["CNI_NETNS"]));
    }

    #[test]
    fn malformed_container_id_and_ifname_are_refused() {
        let cases: [&'static [(&str, &str)]; 4] = [
            &[("CNI_CONTAINERID", "-c1"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "eth0")],
            &[("CNI_CONTAINERID", "c 1"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "eth0")],
            &[("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "a-very-long-ifname")],
            &[("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "eth/0")],
        ];
        for pairs in cases {
            let err = attachment_env(Command::Add, &env(pairs)).expect_err("invalid");
            assert_eq!(err.code(), 4, "{err}");
        }
    }

    #[test]
    fn cni_args_give_the_pod() {
        let args = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=3f69;K8S_POD_UID=6f1c2a4e;SOMETHING_ELSE=x",
        )
        .expect("valid");
        assert_eq!(
            args.k8s,
            Some(PodRef { namespace: "shop".into(), pod: "web-0".into(), uid: Some("6f1c2a4e".into()) })
        );
        // podman passes no UID.
        let args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p").expect("valid");
        assert_eq!(args.k8s.and_then(|k| k.uid), None);
    }

    #[test]
    fn unknown_cni_args_need_ignore_unknown() {
        let err = parse_cni_args("FOO=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=n").expect_err("unknown key");
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("FOO"), "{err}");
        // IgnoreUnknown may come after the unknown key.
        assert!(parse_cni_args("FOO=1;IgnoreUnknown=true").is_ok());
        assert!(parse_cni_args("FOO=1;IgnoreUnknown=0").is_err());
        assert!(parse_cni_args("IgnoreUnknown=maybe").is_err());
    }

    #[test]
    fn cni_args_syntax_and_ips() {
        assert_eq!(parse_cni_args("").expect("empty is fine"), CniArgs::default());
        assert_eq!(parse_cni_args(";;").expect("empty pairs are fine"), CniArgs::default());
        assert!(parse_cni_args("NOEQUALS").is_err());
        assert!(parse_cni_args("=x").is_err());
        let args = parse_cni_args("IP=10.1.0.7/24,2001:db8::7").expect("valid");
        assert_eq!(args.ips, vec!["10.1.0.7".parse::<IpAddr>().expect("ip"), "2001:db8::7".parse().expect("ip")]);
        assert!(parse_cni_args("IP=10.1.0.300").is_err());
    }

    #[test]
    fn half_a_pod_identity_is_refused_except_podmans() {
        assert!(parse_cni_args("K8S_POD_NAMESPACE=n").is_err());
        // podman names the container in K8S_POD_NAME and sends no namespace.
        let podman = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=p").expect("podman's CNI_ARGS");
        assert!(podman.k8s.is_none());
    }

    #[test]
    fn non_utf8_variables_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let e = |key: &str| match key {
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![0xff, 0xfe])),
            "CNI_IFNAME" => Some(OsString::from("eth0")),
            _ => None,
        };
        let err = attachment_env(Command::Del, &e).expect_err("not UTF-8");
        assert!(matches!(err, CniError::InvalidEnvironment { ref vars, .. } if vars == &["CNI_CONTAINERID"]));
    }
}
