//! What old GoTo integrations send ([`params`]), the v2 call it becomes ([`grant`]), and the
//! legacy answer they get back ([`render`]).

mod form;
mod grant;
mod params;
mod render;

pub(crate) use form::{check_form, parse_basic};
pub use grant::Grant;
pub use grant::V2Request;
pub use grant::to_v2;
pub(crate) use grant::with_client_credentials;
pub(crate) use params::all_pairs;
pub use params::collect;
pub use params::{BodyKind, LegacyParams};
pub(crate) use render::render_minted;
