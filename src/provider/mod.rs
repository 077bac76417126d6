//! Providers: the named sets of upstream endpoints one oauth-shim fronts (`[upstream]`, the
//! default, and `[[providers]]`), each with its clients, pools and base URLs ([`Provider`]),
//! selected per request by `Host`.

mod base;
mod clients;
mod select;

pub(crate) use base::Base;
pub(crate) use clients::reconfigure_client;
pub(crate) use select::{Provider, build, host_name, host_table, select};
