//! Configuration: built-in defaults < a TOML file < environment variables < command-line flags.
//!
//! Every key of `config/default.toml` can be set by an environment variable named
//! `REELFLOW_<SECTION>_<KEY>` (upper case); `DATABASE_URL` also sets `database.url`,
//! `REELFLOW_LISTEN` `engine.listen` and `REELFLOW_ADMIN_TOKEN` `engine.admin_token`.
//! All problems of a configuration are reported at once.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dag_id: String,
    pub source: String,
    pub artifacts_dir: PathBuf,
    pub artifacts: ArtifactsSection,
    pub database: DatabaseConfig,
    pub fetch: FetchSection,
    pub clean: CleanSection,
    pub load: reelflow_load::LoadConfig,
    pub gate: reelflow_load::GateConfig,
    pub tasks: std::collections::BTreeMap<String, reelflow_dag::RetryPolicy>,
    pub schedule: ScheduleSection,
    pub engine: EngineSection,
    pub ui: UiSection,
}

/// The operators' page (`/` of the serve port).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    pub require_token_to_read: bool,
    pub session_minutes: u64,
    pub grid_runs: u32,
}

/// Where the stages keep what they hand to each other ([`reelflow_artifacts::Artifacts`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSection {
    /// `s3://bucket/prefix`, `file:///path` or a path; empty = the folder `artifacts_dir`.
    pub url: String,
    /// This process's local working space (downloads, files being written); empty =
    /// `<artifacts_dir>/.scratch` ([`Config::scratch_dir`]).
    pub scratch_dir: PathBuf,
    /// Region of the artifacts bucket; empty = `fetch.s3_region`.
    pub s3_region: String,
    /// Endpoint of the artifacts bucket's S3-compatible store; empty = `fetch.s3_endpoint`
    /// (then `AWS_ENDPOINT_URL`, then AWS).
    pub s3_endpoint: String,
}

impl Config {
    /// This process's scratch folder.
    pub fn scratch_dir(&self) -> PathBuf {
        if self.artifacts.scratch_dir.as_os_str().is_empty() {
            self.artifacts_dir.join(".scratch")
        } else {
            self.artifacts.scratch_dir.clone()
        }
    }

    /// Opens the artifact store `artifacts.url` names, with fetch's S3 endpoint and addressing.
    pub fn artifacts(&self) -> Result<reelflow_artifacts::Artifacts, reelflow_artifacts::ArtifactError> {
        let region = if self.artifacts.s3_region.is_empty() {
            self.fetch.s3_region.clone()
        } else {
            self.artifacts.s3_region.clone()
        };
        let s3 = reelflow_artifacts::S3Settings {
            endpoint: [&self.artifacts.s3_endpoint, &self.fetch.s3_endpoint]
                .into_iter()
                .find(|e| !e.is_empty())
                .cloned(),
            region,
            virtual_hosted: self.fetch.s3_virtual_hosted,
        };
        reelflow_artifacts::Artifacts::open(&self.artifacts.url, &self.artifacts_dir, &s3)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub catchup: bool,
    pub start_period: String,
    pub max_catchup_runs: u32,
    pub max_active_runs: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub listen: String,
    pub lease_secs: u64,
    pub heartbeat_secs: u64,
    pub poll_ms: u64,
    pub notifications: bool,
    pub backstop_poll_secs: u64,
    pub slots: usize,
    pub shutdown_grace_secs: u64,
    pub admin_token: String,
    pub admin_token_file: String,
    pub worker_id: String,
    pub max_backfill_runs: u32,
}

impl EngineSection {
    /// The admin token: `admin_token`, else the trimmed content of `admin_token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if !self.admin_token.is_empty() {
            return Ok(Some(self.admin_token.clone()));
        }
        if self.admin_token_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.admin_token_file)
            .map_err(|e| ConfigError(vec![format!("engine.admin_token_file {}: {e}", self.admin_token_file)]))?;
        let t = text.trim().to_string();
        Ok((!t.is_empty()).then_some(t))
    }

    pub fn worker_id(&self) -> String {
        if !self.worker_id.is_empty() {
            return self.worker_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub embedded_dir: PathBuf,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSection {
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub max_resumes: u32,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_virtual_hosted: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanSection {
    pub max_entry_bytes: u64,
    pub cut_spacing_bytes: u64,
}

impl FetchSection {
    pub fn to_fetch_config(&self) -> reelflow_fetch::FetchConfig {
        reelflow_fetch::FetchConfig {
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
            read_timeout: std::time::Duration::from_secs(self.read_timeout_secs),
            max_resumes: self.max_resumes,
            s3_endpoint: (!self.s3_endpoint.is_empty()).then(|| self.s3_endpoint.clone()),
            s3_region: self.s3_region.clone(),
            s3_virtual_hosted: self.s3_virtual_hosted,
            ..Default::default()
        }
    }
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// Environment variables with conventional names: (variable, section, key).
const ALIASES: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "database", "url"),
    ("REELFLOW_LISTEN", "engine", "listen"),
    ("REELFLOW_ADMIN_TOKEN", "engine", "admin_token"),
];

/// `HOST:PORT` (a name such as `localhost`, an IPv4 or a bracketed IPv6 address) as the first
/// address it resolves to.
pub fn resolve_listen(listen: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = listen.parse() {
        return Ok(a);
    }
    let bad = || format!("{listen:?}: expected HOST:PORT such as 0.0.0.0:8080 or localhost:8080");
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    (host, port.parse::<u16>().expect("checked"))
        .to_socket_addrs()
        .map_err(|e| format!("{listen:?}: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{listen:?}: {host} has no address"))
}

/// Variables reelflow reads besides the generated `REELFLOW_<SECTION>_<KEY>` names.
const OTHER_VARS: &[&str] = &[
    "REELFLOW_CONFIG",
    "REELFLOW_LOG",
    "REELFLOW_LOG_FORMAT",
    "REELFLOW_FAILPOINTS",
    // Used by scripts/, not by the binary.
    "REELFLOW_BIN",
    "REELFLOW_TOOLS_DIR",
];

fn leaf_vars(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let name = format!("{prefix}_{}", k.to_uppercase());
        match v {
            toml::Value::Table(t) => leaf_vars(t, &name, out),
            _ => out.push(name),
        }
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Warnings for `REELFLOW_*` variables that no setting reads (a typo is otherwise ignored
/// silently), each naming the closest known variable.
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let defaults: toml::Table = DEFAULTS.parse().expect("built-in defaults parse");
    let mut known = Vec::new();
    leaf_vars(&defaults, "REELFLOW", &mut known);
    known.extend(OTHER_VARS.iter().map(|s| s.to_string()));
    known.extend(ALIASES.iter().map(|a| a.0.to_string()));
    let mut out = Vec::new();
    for name in names {
        if !name.starts_with("REELFLOW_") || known.contains(&name) {
            continue;
        }
        let closest = known
            .iter()
            .map(|k| (distance(&name, k), k))
            .min()
            .filter(|(d, _)| *d <= 4)
            .map(|(_, k)| format!("; did you mean {k}?"))
            .unwrap_or_default();
        out.push(format!("{name} is not a reelflow setting and is ignored{closest}"));
    }
    out
}

/// Checks the schedule's cron expression and time zone separately (so one does not hide the
/// other), presets by name, and that the expression fires at all.
fn check_schedule(cron: &str, tz: &str, errors: &mut Vec<String>) {
    const PRESETS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];
    let mut ok = true;
    if cron.trim_start().starts_with('@') && !PRESETS.contains(&cron.trim()) {
        errors.push(format!(
            "schedule.cron {cron:?}: unknown preset (expected one of {}, or 5 cron fields)",
            PRESETS.join(", ")
        ));
        ok = false;
    } else if let Err(e) = reelflow_dag::Schedule::new(cron, "UTC") {
        errors.push(format!("schedule: {e}"));
        ok = false;
    }
    if let Err(e) = reelflow_dag::Schedule::new("@monthly", tz) {
        errors.push(format!("schedule: {e}"));
        ok = false;
    }
    if ok {
        if let Ok(s) = reelflow_dag::Schedule::new(cron, tz) {
            if s.next_after(chrono::Utc::now()).is_none() {
                errors.push(format!(
                    "schedule.cron {cron:?} never fires (no such date, e.g. 31 February)"
                ));
            }
        }
    }
}

/// Merges `over` into `base` key by key; unknown keys are reported.
fn merge(base: &mut toml::Table, over: toml::Table, prefix: &str, errors: &mut Vec<String>) {
    for (k, v) in over {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &path, errors),
            (Some(slot), v) if std::mem::discriminant(slot) == std::mem::discriminant(&v) => *slot = v,
            (Some(slot), v) => errors.push(format!("{path}: expected {}, found {}", slot.type_str(), v.type_str())),
            (None, _) => errors.push(format!("{path}: unknown key")),
        }
    }
}

/// Applies `REELFLOW_<PATH>` variables to every leaf key, parsed as the key's type.
fn apply_env(table: &mut toml::Table, prefix: &str, env: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<String>) {
    for (k, v) in table.iter_mut() {
        let name = format!("{prefix}_{}", k.to_uppercase());
        if let toml::Value::Table(t) = v {
            apply_env(t, &name, env, errors);
            continue;
        }
        let Some(raw) = env(&name) else { continue };
        let parsed = match v {
            toml::Value::String(_) => Ok(toml::Value::String(raw.clone())),
            toml::Value::Integer(_) => raw.trim().parse().map(toml::Value::Integer).map_err(|_| "an integer"),
            toml::Value::Boolean(_) => raw
                .trim()
                .parse()
                .map(toml::Value::Boolean)
                .map_err(|_| "true or false"),
            toml::Value::Float(_) => raw.trim().parse().map(toml::Value::Float).map_err(|_| "a number"),
            _ => Err("a supported type"),
        };
        match parsed {
            Ok(p) => *v = p,
            Err(want) => errors.push(format!("{name}={raw:?}: expected {want}")),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let mut table: toml::Table = DEFAULTS.parse().expect("built-in defaults parse");
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(over) => merge(&mut table, over, "", &mut errors),
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                },
                Err(e) => errors.push(format!("cannot read {}: {e}", path.display())),
            }
        }
        apply_env(&mut table, "REELFLOW", env, &mut errors);
        // Conventional names that win over the generated ones.
        for (var, section, key) in ALIASES {
            if let Some(value) = env(var) {
                if let Some(toml::Value::Table(t)) = table.get_mut(*section) {
                    t.insert(key.to_string(), toml::Value::String(value));
                }
            }
        }
        let cfg: Option<Config> = match toml::Value::Table(table).try_into() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        if let Some(c) = &cfg {
            if c.load.parallelism == 0 {
                errors.push("load.parallelism must be at least 1".into());
            }
            if c.fetch.read_timeout_secs == 0 || c.fetch.connect_timeout_secs == 0 {
                errors.push("fetch timeouts must be at least 1 second".into());
            }
            if let Err(e) = reelflow_fetch::Source::parse(&c.source) {
                errors.push(format!("source: {e}"));
            }
            for (task, policy) in &c.tasks {
                errors.extend(policy.validate(task));
            }
            check_schedule(&c.schedule.cron, &c.schedule.timezone, &mut errors);
            if !c.schedule.start_period.is_empty() {
                if let Err(e) = c.schedule.start_period.parse::<reelflow_dag::Period>() {
                    errors.push(format!("schedule.start_period: {e}"));
                }
            }
            if c.schedule.max_active_runs == 0 {
                errors.push("schedule.max_active_runs must be at least 1".into());
            }
            if c.engine.lease_secs == 0
                || c.engine.heartbeat_secs == 0
                || c.engine.heartbeat_secs >= c.engine.lease_secs
            {
                errors.push("engine.heartbeat_secs must be at least 1 and below engine.lease_secs".into());
            }
            let url = c.artifacts.url.trim().to_ascii_lowercase();
            if !(url.is_empty() || url.starts_with("s3://") || url.starts_with("file:///") || !url.contains("://")) {
                errors.push(format!(
                    "artifacts.url {:?}: expected s3://bucket/prefix, file:///path or a path",
                    c.artifacts.url
                ));
            }
            if c.engine.poll_ms == 0 {
                errors.push("engine.poll_ms must be at least 1".into());
            }
            if c.engine.backstop_poll_secs == 0 {
                errors.push("engine.backstop_poll_secs must be at least 1".into());
            }
            if c.engine.slots == 0 {
                errors.push("engine.slots must be at least 1".into());
            }
            if let Err(e) = resolve_listen(&c.engine.listen) {
                errors.push(format!("engine.listen {e}"));
            }
        }
        match (cfg, errors.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err(ConfigError(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_load() {
        let c = Config::load(None, &env_of(&[])).unwrap();
        assert_eq!(c.dag_id, "movies_monthly");
        assert_eq!(c.load.keep_previous, 2);
        assert!(c.database.url.is_empty());
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "source = \"/tmp/x.zip\"\n[fetch]\nread_timeout_secs = 5\n").unwrap();
        let c = Config::load(
            Some(&path),
            &env_of(&[
                ("REELFLOW_FETCH_READ_TIMEOUT_SECS", "7"),
                ("DATABASE_URL", "postgres://h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source, "/tmp/x.zip");
        assert_eq!(c.fetch.read_timeout_secs, 7);
        assert_eq!(c.database.url, "postgres://h/db");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "colour = 1\n[fetch]\nread_timeout_secs = \"soon\"\n").unwrap();
        let err = Config::load(Some(&path), &env_of(&[("REELFLOW_LOAD_PARALLELISM", "many")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("colour: unknown key"), "{text}");
        assert!(text.contains("fetch.read_timeout_secs: expected integer"), "{text}");
        assert!(text.contains("REELFLOW_LOAD_PARALLELISM"), "{text}");
    }
}
