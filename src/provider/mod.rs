//! Providers: the named sets of upstream endpoints one oauth-shim fronts (`[upstream]`, the
//! default, and `[[providers]]`), each with its clients, pools and base URLs ([`Provider`]),
//! selected per request by `Host`.

mod base;
mod pools;
mod select;

pub use base::Base;
pub use pools::{build_http_client, reconfigure_http_client};
pub use select::{Provider, build, host_table, select};
