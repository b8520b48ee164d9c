//! The parts of a Spin manifest (`spin.toml`, manifest version 2) that
//! `tern spin` honours: the HTTP trigger's route, and the component's
//! `source`, `environment` and `key_value_stores`. Everything else (build
//! commands, metadata) is Spin's business and ignored here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Raw {
    spin_manifest_version: u32,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
}

/// The one HTTP-triggered component `tern spin` serves.
#[derive(Debug)]
pub struct HttpApp {
    pub component: String,
    /// Path prefix the trigger routes to the component (`/...` → `/`).
    pub route_prefix: String,
    /// The .wasm, resolved against the manifest's directory.
    pub source: PathBuf,
    pub environment: BTreeMap<String, String>,
}

impl HttpApp {
    /// The path below the route (what Spin passes in `spin-path-info`), if
    /// the trigger's route covers `path`.
    pub fn path_info<'a>(&self, path: &'a str) -> Option<&'a str> {
        let below = path.strip_prefix(&self.route_prefix)?;
        // Keep the leading slash: `/v1/relays` under `/tern/...` is `/v1/relays`.
        Some(&path[path.len() - below.len() - 1..])
    }
}

/// Read `path` and pick the HTTP trigger for `component` (or the only one).
pub fn load(path: &Path, component: Option<&str>) -> Result<HttpApp, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.into(),
        source,
    })?;
    let raw: Raw = toml::from_str(&text).map_err(|source| ManifestError::Parse {
        path: path.into(),
        source: Box::new(source),
    })?;
    if raw.spin_manifest_version != 2 {
        return Err(ManifestError::Invalid(format!(
            "spin_manifest_version {} (only 2 is understood)",
            raw.spin_manifest_version
        )));
    }
    let trigger = match component {
        Some(name) => raw.trigger.http.iter().find(|t| t.component == name),
        None if raw.trigger.http.len() == 1 => raw.trigger.http.first(),
        None => {
            return Err(ManifestError::Invalid(format!(
                "{} HTTP triggers; say which component with --component",
                raw.trigger.http.len()
            )))
        }
    }
    .ok_or_else(|| ManifestError::Invalid("no [[trigger.http]] for that component".into()))?;
    let c = raw
        .component
        .get(&trigger.component)
        .ok_or_else(|| ManifestError::Invalid(format!("no [component.{}]", trigger.component)))?;
    // The component opens bucket `default`; Spin refuses it unless declared,
    // so a manifest without it would work here and fail on Spin.
    if !c.key_value_stores.iter().any(|s| s == "default") {
        return Err(ManifestError::Invalid(format!(
            "[component.{}] needs key_value_stores = [\"default\"]",
            trigger.component
        )));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(HttpApp {
        component: trigger.component.clone(),
        route_prefix: route_prefix(&trigger.route)?,
        source: base.join(&c.source),
        environment: c.environment.clone(),
    })
}

/// Spin routes: `/...` matches everything below; otherwise an exact path.
/// Only wildcard routes make sense for this component (it has many paths).
/// The prefix keeps its trailing slash.
fn route_prefix(route: &str) -> Result<String, ManifestError> {
    match route.strip_suffix("/...") {
        Some(p) => Ok(format!("{p}/")),
        None => Err(ManifestError::Invalid(format!(
            "route {route:?}: the signaling component needs a wildcard route (\"/...\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_repository_manifest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let app = load(&path, None).expect("spin.toml parses");
        assert_eq!(app.route_prefix, "/");
        assert_eq!(app.path_info("/v1/http/connect"), Some("/v1/http/connect"));
        assert!(app
            .source
            .ends_with("wasm32-wasip2/component/signaling_component.wasm"));
        assert!(app.environment.contains_key("TERN_EDGE"));
    }

    #[test]
    fn routes() {
        assert_eq!(route_prefix("/...").unwrap(), "/");
        assert_eq!(route_prefix("/tern/...").unwrap(), "/tern/");
        assert!(route_prefix("/exact").is_err());
        let app = HttpApp {
            component: "c".into(),
            route_prefix: route_prefix("/tern/...").unwrap(),
            source: "x.wasm".into(),
            environment: BTreeMap::new(),
        };
        assert_eq!(app.path_info("/tern/v1/relays"), Some("/v1/relays"));
        assert_eq!(app.path_info("/other"), None);
    }
}
