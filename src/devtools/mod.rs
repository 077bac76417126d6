//! Developer tools, outside the request path: the `oauth-shim dev` command and the local v2
//! stand-in it (and the integration tests) run against. Production modules never import these.

pub(crate) mod dev;
pub mod standin;
