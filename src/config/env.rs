//! The `OAUTH_SHIM_` environment overrides, without variables that name no config key.

use figment::Figment;
use figment::providers::{Env, Serialized};

use super::load::Config;

/// The environment provider (`OAUTH_SHIM_<SECTION>__<KEY>`, values parsed as figment reads
/// them: `[a, b]` is a list, `{k = v}` a table), without the variables that name no config key,
/// and those variables' names. A variable counts as naming a key when the defaults with it
/// alone merged on top extract without an unknown-field error; so every key the config types
/// know is accepted, whatever table it sits in.
pub fn env_overrides() -> (Env, Vec<String>) {
    let env = || Env::prefixed("OAUTH_SHIM_").ignore(&["config"]).split("__");
    let mut unknown: Vec<String> = Vec::new();
    for (key, value) in env().iter() {
        let probe = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default(key.as_str(), value.parse::<figment::value::Value>().ok()));
        if let Err(e) = probe.extract::<Config>()
            && e.into_iter().any(|e| matches!(e.kind, figment::error::Kind::UnknownField(..)))
        {
            unknown.push(key.as_str().to_owned());
        }
    }
    unknown.sort();
    unknown.dedup();
    let names =
        unknown.iter().map(|k| format!("OAUTH_SHIM_{}", k.replace('.', "__").to_ascii_uppercase())).collect();
    let keep = unknown.clone();
    (env().filter(move |k| !keep.iter().any(|u| u.as_str() == k)), names)
}
