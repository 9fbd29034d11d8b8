//! One configuration scheme for every service: a TOML file, then `PORTCULLIS_*` environment
//! variables, then command-line flags, later winning.
//!
//! - The file is named by `--config FILE` or, without the flag, `PORTCULLIS_CONFIG`
//!   ([`config_file`]). An unknown key in it is an error naming the key and the file.
//! - A variable is a setting only when its name, after `PORTCULLIS_`, has a `__` and starts
//!   with a known section: `PORTCULLIS_ADMISSION__RATE_LIMIT__DEFAULT__PER_SECOND=50` is
//!   `admission.rate_limit.default.per_second`. The client's own variables
//!   (`PORTCULLIS_SERVER`, `PORTCULLIS_API_KEY`, `PORTCULLIS_OPERATOR_KEY`,
//!   `PORTCULLIS_SERVICE_TOKEN`, `PORTCULLIS_CONFIG`, `PORTCULLIS_TEST_*`, ...) have no `__`
//!   or no known section, so they are never read as settings; a variable that maps into a
//!   known section but names an unknown key is an error naming the variable. Older single
//!   names (`PORTCULLIS_LISTEN`) are kept as [`Environment::alias`]es of a key.
//! - Flags are [`Flags`]: only the flags given, each at its key.
//!
//! The settings type itself (one section per service and per shared concern) is the
//! binary's: the sections are the services' own option structs, which depend on this kit.
//! Durations are humantime strings (`"30s"`, `"10m"`, `"7days"`) through `humantime-serde`.
//!
//! Built on figment rather than the `config` crate: figment layers typed providers (the
//! defaults as a serialized value, the TOML file, the environment, the flags) and each value
//! keeps its provider, so an error says which file or variable and which key path was bad;
//! `config` merges untyped maps and loses where a value came from. The environment is a
//! provider of our own over a map ([`Environment`]), like linkerd2-proxy reading its
//! environment through a trait: tests pass a map and never change the process's variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The prefix of every settings variable.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// The variable naming the settings file when `--config` is not given.
pub const CONFIG_ENV: &str = "PORTCULLIS_CONFIG";

/// Separator of nested keys in a variable's name.
const ENV_SPLIT: &str = "__";

/// Why settings could not be read: every bad value, each with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct SettingsError {
    /// One line per problem: `SOURCE: KEY.PATH: what is wrong`.
    pub problems: Vec<String>,
}

impl SettingsError {
    fn from_figment(error: figment::Error) -> SettingsError {
        let problems = error
            .into_iter()
            .map(|e| {
                let mut path = e.path.join(".");
                // An unknown key may be reported at its parent: name the key itself.
                if let figment::error::Kind::UnknownField(field, _) = &e.kind
                    && e.path.last() != Some(field)
                {
                    path = if path.is_empty() {
                        field.clone()
                    } else {
                        format!("{path}.{field}")
                    };
                }
                let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
                let source = match &e.metadata {
                    Some(md) => match &md.source {
                        Some(source) => source.to_string(),
                        None => md.interpolate(&Profile::Default, &keys).to_string(),
                    },
                    None => "settings".to_owned(),
                };
                let shown = if path.is_empty() { "(top level)" } else { path.as_str() };
                format!("{source}: {shown}: {}", e.kind)
            })
            .collect();
        SettingsError { problems }
    }

    /// One problem, from outside figment (a file that cannot be read, a check of values).
    pub fn new(problem: impl Into<String>) -> SettingsError {
        SettingsError {
            problems: vec![problem.into()],
        }
    }
}

/// The settings file: `--config FILE` when given, else `PORTCULLIS_CONFIG` when set and not
/// empty, else none.
pub fn config_file(flag: Option<&Path>, env: &Environment) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.get(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Environment variables, read once (from the process, or a map in tests), with the
/// old single-name variables that stand for one key each.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    aliases: Vec<(String, String)>,
}

impl Environment {
    /// The process's variables (those that are valid UTF-8).
    pub fn process() -> Environment {
        Environment::from_vars(std::env::vars())
    }

    /// These variables only.
    pub fn from_vars<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Environment {
        Environment {
            vars: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            aliases: Vec::new(),
        }
    }

    /// Reads `variable` (e.g. `PORTCULLIS_LISTEN`) as the key `key` (e.g. `server.listen`);
    /// the nested form of the same key, when also set, wins.
    pub fn alias(mut self, variable: &str, key: &str) -> Environment {
        self.aliases.push((variable.to_owned(), key.to_owned()));
        self
    }

    /// One variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The settings this environment gives for a type with these top-level `sections`: the
    /// aliases first, then every `PORTCULLIS_SECTION__KEY...` variable of a known section.
    pub fn provider<'a>(&'a self, sections: &'a [&'a str]) -> impl Provider + 'a {
        EnvProvider { env: self, sections }
    }

    /// `(key path, value)` of every variable read as a setting, aliases first.
    fn settings<'a>(&'a self, sections: &'a [&'a str]) -> impl Iterator<Item = (Vec<String>, &'a str)> + 'a {
        let aliased = self.aliases.iter().filter_map(|(variable, key)| {
            let value = self.vars.get(variable)?;
            Some((key.split('.').map(str::to_owned).collect(), value.as_str()))
        });
        let nested = self.vars.iter().filter_map(move |(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            if !rest.contains(ENV_SPLIT) {
                return None;
            }
            let path: Vec<String> = rest.split(ENV_SPLIT).map(str::to_ascii_lowercase).collect();
            let section = path.first()?;
            if path.iter().any(String::is_empty) || !sections.contains(&section.as_str()) {
                return None;
            }
            Some((path, value.as_str()))
        });
        aliased.chain(nested)
    }
}

struct EnvProvider<'a> {
    env: &'a Environment,
    sections: &'a [&'a str],
}

impl Provider for EnvProvider<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_: &Profile, keys: &[&str]| {
            let upper: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", upper.join(ENV_SPLIT))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (path, value) in self.env.settings(self.sections) {
            // A value is read as TOML-like data (numbers, booleans, arrays), else as text.
            let value: Value = value.parse().unwrap_or_else(|_| Value::from(value.to_owned()));
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// The flags given on the command line, each at its key.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    dict: Dict,
}

impl Flags {
    /// No flags.
    pub fn new() -> Flags {
        Flags::default()
    }

    /// Sets `path` (e.g. `["admission", "rate_limit", "max_tenants"]`) to `value`.
    pub fn set<T: Serialize>(&mut self, path: &[&str], value: T) -> Result<&mut Flags, SettingsError> {
        let value = Value::serialize(value).map_err(|e| SettingsError::new(format!("flag {}: {e}", path.join("."))))?;
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        insert(&mut self.dict, &path, value);
        Ok(self)
    }

    /// Sets `path` when `value` is `Some`.
    pub fn set_some<T: Serialize>(&mut self, path: &[&str], value: Option<T>) -> Result<&mut Flags, SettingsError> {
        match value {
            Some(value) => self.set(path, value),
            None => Ok(self),
        }
    }
}

impl Provider for Flags {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flags")
            .interpolater(|_: &Profile, keys: &[&str]| format!("the flag setting {}", keys.join(".")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// The layers of one service's settings, lowest first: `defaults`, the file, the
/// environment, the flags.
#[derive(Debug)]
pub struct Layers<'a, S> {
    /// The service's defaults (the option structs' `Default`s, adjusted per service).
    pub defaults: S,
    /// The settings file, when there is one.
    pub file: Option<&'a Path>,
    /// The environment (only variables of known sections are read).
    pub env: &'a Environment,
    /// The flags given.
    pub flags: &'a Flags,
}

impl<S: Serialize + DeserializeOwned> Layers<'_, S> {
    /// Merges the layers, later winning, and reads the settings; `sections` are the
    /// top-level keys of `S` (the only ones read from the environment).
    pub fn load(self, sections: &[&str]) -> Result<S, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(self.defaults));
        if let Some(file) = self.file {
            // figment treats a missing file as empty: a named file must exist.
            if !file.is_file() {
                return Err(SettingsError::new(format!("{}: no such settings file", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(self.env.provider(sections))
            .merge(self.flags.clone())
            .extract()
            .map_err(SettingsError::from_figment)
    }
}

/// Reads a settings file alone over `defaults` (for `config check`): unknown keys and bad
/// values are errors naming the file and the key.
pub fn check_file<S: Serialize + DeserializeOwned>(defaults: S, file: &Path) -> Result<S, SettingsError> {
    Layers {
        defaults,
        file: Some(file),
        env: &Environment::default(),
        flags: &Flags::new(),
    }
    .load(&[])
}
