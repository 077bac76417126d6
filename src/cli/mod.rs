//! Command line: `serve`, `check-config`, `dev`, and the admin clients `healthcheck`, `reload`,
//! `report` and `sessions`: parse, then hand each command to its runner.
//! Config errors print one line and exit 64 before any port is bound.

mod admin;
mod args;
mod client;
mod run;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => {
            let path = crate::config::config_path(config.as_deref());
            let config = match run::load(Some(path.clone())) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run::run(config.server.resolved_worker_threads(), run::serve(config, path))
        }
        Command::CheckConfig { config } => run::check_config(config),
        #[cfg(feature = "devtools")]
        Command::Dev { listen, admin_listen, standin_listen, config_file } => run::run(
            std::thread::available_parallelism().map_or(1, usize::from),
            crate::devtools::dev::run(listen, admin_listen, standin_listen, config_file),
        ),
        Command::Healthcheck { config, admin, ready } => admin::healthcheck(config, admin, ready),
        Command::Reload { config, admin } => admin::reload(config, admin),
        Command::Report { config, admin, json, since, client } => {
            admin::report(config, admin, json, since, client)
        }
        Command::Sessions { action } => admin::sessions(action),
    }
}
